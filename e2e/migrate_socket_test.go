package e2e

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evictguard/evictguard/e2e/harness"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/migration"
)

// socketProbe connects to a socket every 2 ms, as a kubelet, a monitoring agent
// or an operator's `docker ps` would, and records when a connection was accepted.
type socketProbe struct {
	mu       sync.Mutex
	attempts []probeResult
	stop     chan struct{}
	done     chan struct{}
}

type probeResult struct {
	at       time.Time
	accepted bool
}

func startSocketProbe(path string) *socketProbe {
	p := &socketProbe{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			at := time.Now()
			c, err := net.DialTimeout("unix", path, 500*time.Millisecond)
			if err == nil {
				// A request, so that a socket-activated service has something to answer.
				_ = c.SetDeadline(time.Now().Add(2 * time.Second))
				_, _ = c.Write([]byte("GET /_ping HTTP/1.0\r\n\r\n"))
				_, _ = c.Read(make([]byte, 64))
				c.Close()
			}
			p.mu.Lock()
			p.attempts = append(p.attempts, probeResult{at: at, accepted: err == nil})
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *socketProbe) finish() []probeResult {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.attempts
}

// TestMigrateDockerSocketActivated moves a dockerd that docker.socket starts on demand (as
// Debian's and Docker's packages install it) while clients keep connecting to the API socket.
// Leaving docker.socket listening would start dockerd again — on the old root, in the middle
// of the copy — at the next connection. With the default --runtime-units evictguard stops
// docker.socket first and starts it again last: no connection is accepted between the stop
// and the switch, dockerd is started exactly once more (on the new root), and docker.socket is
// active again afterwards. The same holds when evictguard is killed in the stopped window and
// the migration is resumed or rolled back from the journal.
func TestMigrateDockerSocketActivated(t *testing.T) {
	tests := []struct {
		name       string
		crashAfter string // "": no crash
		then       string // --resume or --rollback after the crash
		wantOld    bool   // docker ends on the old root
	}{
		{name: "migrate"},
		{name: "crash after delta, resume", crashAfter: migration.StepDelta, then: "--resume"},
		{name: "crash after verify, rollback", crashAfter: migration.StepVerify, then: "--rollback", wantOld: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			harness.RequireRoot(t)
			a, b := harness.TmpFS(t, 64<<20, 20000), harness.TmpFS(t, 96<<20, 20000)
			stateDir := harness.TempDir(t, "evictguard-state")
			sd := harness.StartSystemd(t)
			from, to := filepath.Join(a, "docker"), filepath.Join(b, "docker")
			d := harness.StartDockerSocketUnits(t, sd, harness.DockerUnitOptions{DaemonJSON: `{"data-root": "` + from + `", "log-level": "warn"}`})
			d.ImportBusybox(t, "evictguard.local/busybox:1")
			d.CLI(t, "volume", "create", "vol1")
			d.CLI(t, "run", "--rm", "--network", "none", "-v", "vol1:/vol", "evictguard.local/busybox:1", "sh", "-c", "echo volume-data > /vol/data")
			digest, lines := dataDigestLines(t, from)
			if n := len(d.Starts(t)); n != 1 {
				t.Fatalf("dockerd started %d times before the migration, want 1", n)
			}
			// No --runtime-units: the default is docker.socket, docker.service.
			args := []string{"migrate", "--runtime", "docker", "--bus-address", sd.BusAddress, "--docker-socket", d.Socket,
				"--docker-config", d.ConfigPath, "--state-dir", stateDir, "--yes", "--to", to}

			probe := startSocketProbe(d.Socket)
			var env []string
			if tc.crashAfter != "" {
				env = []string{"EVICTGUARD_TEST_CRASH_AFTER=" + tc.crashAfter}
			}
			out, errOut, code := runEvictguardEnv(t, env, args...)
			if tc.crashAfter == "" && code != 0 || tc.crashAfter != "" && code != -1 {
				probe.finish()
				t.Fatalf("migrate: exit %d\n%s\n%s", code, out, errOut)
			}
			finalPhase := time.Now() // the runtime may legitimately start from here on
			if tc.then != "" {
				time.Sleep(time.Second) // clients keep knocking while evictguard is dead
				finalPhase = time.Now()
				if out, errOut, code := runEvictguardEnv(t, nil, "migrate", tc.then, "--bus-address", sd.BusAddress,
					"--docker-socket", d.Socket, "--docker-config", d.ConfigPath, "--state-dir", stateDir); code != 0 {
					probe.finish()
					t.Fatalf("migrate %s: exit %d\n%s\n%s", tc.then, code, out, errOut)
				}
			}
			attempts := probe.finish()

			j, err := journal.Open("/", stateDir, nil)
			if err != nil {
				t.Fatal(err)
			}
			ops, err := j.List()
			if err != nil || len(ops) != 1 {
				t.Fatalf("journal: %v %+v", err, ops)
			}
			op := ops[0]
			var stopped, switched time.Time
			for _, h := range op.History {
				t.Logf("  %-14s %s", h.Step, h.Note)
				switch h.Step {
				case migration.StepStop:
					stopped = h.At
					if !strings.Contains(h.Note, "docker.socket") {
						t.Errorf("stop step %q does not name docker.socket", h.Note)
					}
				case migration.StepConfig:
					switched = h.At
				}
			}
			if stopped.IsZero() {
				t.Fatal("no stop step in the journal")
			}
			if tc.crashAfter != "" || switched.IsZero() {
				switched = finalPhase
			}
			active, _ := op.Data["migration"].(map[string]any)["active"].(map[string]any)
			if active["docker.socket"] != true || active["docker.service"] != true {
				t.Errorf("journal: units active before the stop %v, want docker.socket and docker.service", active)
			}

			// The stopped window: clients knocked, and nothing answered.
			inWindow := 0
			for _, a := range attempts {
				if a.at.After(stopped) && a.at.Before(switched) {
					inWindow++
					if a.accepted {
						t.Errorf("a connection to %s was accepted at %s, in the stopped window %s – %s", d.Socket,
							a.at.Format(time.StampMilli), stopped.Format(time.StampMilli), switched.Format(time.StampMilli))
					}
				}
			}
			if inWindow == 0 {
				t.Fatalf("no connection attempt fell in the stopped window %s – %s (%d attempts): the test proved nothing",
					stopped.Format(time.StampMilli), switched.Format(time.StampMilli), len(attempts))
			}
			// dockerd started once before and once after, never in between.
			starts := d.Starts(t)
			for _, s := range starts[1:] {
				if s.Before(switched) {
					t.Errorf("dockerd was started at %s, before the switch at %s (on the old root)", s.Format(time.StampMilli), switched.Format(time.StampMilli))
				}
			}
			if len(starts) != 2 {
				t.Errorf("dockerd started %d times, want 2 (before and after the migration)", len(starts))
			}
			t.Logf("%d connection attempts, %d in the stopped window (%s), none accepted; dockerd started %d times",
				len(attempts), inWindow, switched.Sub(stopped).Round(time.Millisecond), len(starts))

			conn := sd.Conn(t)
			for _, u := range []string{d.SocketUnit, d.ServiceUnit} {
				p, err := conn.GetUnitPropertyContext(context.Background(), u, "ActiveState")
				if err != nil {
					t.Fatal(err)
				}
				if got := strings.Trim(p.Value.String(), `"`); got != "active" {
					t.Errorf("%s is %s after the migration, want active", u, got)
				}
			}
			want, wantState := to, journal.StateDone
			if tc.wantOld {
				want, wantState = from, journal.StateRolledBack
			}
			if ops, _ := j.List(); ops[0].State != wantState {
				t.Errorf("operation %s, want %s", ops[0].State, wantState)
			}
			if got := strings.TrimSpace(d.CLI(t, "info", "--format", "{{.DockerRootDir}}")); got != want {
				t.Fatalf("docker info DockerRootDir = %s, want %s", got, want)
			}
			assertSameData(t, want, digest, lines)
			if out := d.CLI(t, "run", "--rm", "--network", "none", "-v", "vol1:/vol", "evictguard.local/busybox:1", "cat", "/vol/data"); strings.TrimSpace(out) != "volume-data" {
				t.Errorf("volume data: %q", out)
			}
		})
	}
}
