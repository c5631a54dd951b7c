package sdbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// Client talks to one systemd manager over D-Bus. It is safe for concurrent use. If the bus
// connection drops (dbus-daemon restarted), the next call dials again.
type Client struct {
	log  *slog.Logger
	desc string // what we are connected to, for errors and logs
	dial func() (*dbus.Conn, error)

	mu   sync.Mutex
	conn *sddbus.Conn
}

// New connects to the systemd manager on the system bus (DBUS_SYSTEM_BUS_ADDRESS, else
// /var/run/dbus/system_bus_socket). ctx bounds connecting only; the connection lives until
// Close.
func New(ctx context.Context, logger *slog.Logger) (*Client, error) {
	return newClient(ctx, logger, "system bus", func() (*dbus.Conn, error) {
		return authHello(dbus.SystemBusPrivate())
	})
}

// NewWithAddress connects to the systemd manager on the bus at busAddress, a D-Bus address
// such as "unix:path=/host/run/dbus/system_bus_socket". It does not read the process
// environment. ctx bounds connecting only; the connection lives until Close.
func NewWithAddress(ctx context.Context, logger *slog.Logger, busAddress string) (*Client, error) {
	if busAddress == "" {
		return nil, errors.New("systemd: empty bus address")
	}
	return newClient(ctx, logger, "bus "+busAddress, func() (*dbus.Conn, error) {
		return authHello(dbus.Dial(busAddress))
	})
}

func newClient(ctx context.Context, logger *slog.Logger, desc string, dial func() (*dbus.Conn, error)) (*Client, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{log: logger, desc: desc, dial: dial}
	if _, err := c.connection(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// authHello authenticates as the current uid (EXTERNAL, numeric uid so that no user lookup is
// needed) and registers on the bus. The godbus connection is deliberately created without
// dbus.WithContext: godbus closes a connection when that context ends, and the connection must
// outlive the context of the call that created it.
func authHello(conn *dbus.Conn, err error) (*dbus.Conn, error) {
	if err != nil {
		return nil, err
	}
	if err := conn.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	if err := conn.Hello(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("hello: %w", err)
	}
	return conn, nil
}

// connection returns the live connection, dialing (bounded by ctx) if there is none.
func (c *Client) connection(ctx context.Context) (*sddbus.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil && c.conn.Connected() {
		return c.conn, nil
	}
	if c.conn != nil {
		c.log.Warn("systemd D-Bus connection lost; reconnecting", "bus", c.desc)
		c.conn.Close()
		c.conn = nil
	}
	type result struct {
		conn *sddbus.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		conn, err := sddbus.NewConnection(c.dial)
		ch <- result{conn, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("connect to systemd on %s: %w", c.desc, r.err)
		}
		c.conn = r.conn
		return r.conn, nil
	case <-ctx.Done():
		go func() { // do not leak a connection that completes late
			if r := <-ch; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, fmt.Errorf("connect to systemd on %s: %w", c.desc, ctx.Err())
	}
}

// Close closes the connection.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// DaemonReload makes the manager re-read all unit files and drop-ins (systemctl
// daemon-reload). It returns when the reload is complete.
func (c *Client) DaemonReload(ctx context.Context) error {
	conn, err := c.connection(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := conn.ReloadContext(ctx); err != nil {
		return fmt.Errorf("daemon-reload: %w", err)
	}
	c.log.Info("systemd daemon-reload done", "duration_seconds", time.Since(start).Seconds())
	return nil
}

// JobError is returned when systemd finished a unit job with a result other than "done".
type JobError struct {
	Unit   string
	Op     string // "start", "stop", "restart"
	JobID  int
	Result string // "canceled", "timeout", "failed", "dependency", "skipped", …
}

func (e *JobError) Error() string {
	return fmt.Sprintf("%s %s: job %d finished with result %q", e.Op, e.Unit, e.JobID, e.Result)
}

// ErrJobTimeout is wrapped by the error returned when a job's result did not arrive in time.
// The job is left queued in systemd.
var ErrJobTimeout = errors.New("job result not received in time")

// Restart restarts unit (mode "replace") and waits up to timeout (0: only ctx bounds it) for
// the job's result. A result other than "done" is a *JobError.
func (c *Client) Restart(ctx context.Context, unit string, timeout time.Duration) error {
	return c.job(ctx, "restart", unit, timeout, (*sddbus.Conn).RestartUnitContext)
}

// Start starts unit and waits for the job's result like Restart.
func (c *Client) Start(ctx context.Context, unit string, timeout time.Duration) error {
	return c.job(ctx, "start", unit, timeout, (*sddbus.Conn).StartUnitContext)
}

// Stop stops unit and waits for the job's result like Restart.
func (c *Client) Stop(ctx context.Context, unit string, timeout time.Duration) error {
	return c.job(ctx, "stop", unit, timeout, (*sddbus.Conn).StopUnitContext)
}

type jobFunc func(c *sddbus.Conn, ctx context.Context, name, mode string, ch chan<- string) (int, error)

func (c *Client) job(ctx context.Context, op, unit string, timeout time.Duration, fn jobFunc) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	conn, err := c.connection(ctx)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, unit, err)
	}
	start := time.Now()
	// Buffered: go-systemd delivers the result from its signal loop while holding a lock, so an
	// unread unbuffered channel (after we gave up waiting) would stall every later job.
	ch := make(chan string, 1)
	id, err := fn(conn, ctx, unit, "replace", ch)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, unit, err)
	}
	c.log.Info("systemd job queued", "op", op, "unit", unit, "job", id)
	select {
	case result := <-ch:
		c.log.Info("systemd job finished", "op", op, "unit", unit, "job", id, "result", result,
			"duration_seconds", time.Since(start).Seconds())
		if result != "done" {
			return &JobError{Unit: unit, Op: op, JobID: id, Result: result}
		}
		return nil
	case <-ctx.Done():
		c.log.Warn("systemd job result not received in time", "op", op, "unit", unit, "job", id,
			"waited_seconds", time.Since(start).Seconds())
		return fmt.Errorf("%s %s: job %d still pending after %s: %w (%w)", op, unit, id,
			time.Since(start).Round(time.Millisecond), ErrJobTimeout, ctx.Err())
	}
}
