package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BaseDir holds the run directories of every test binary that uses the harness.
const BaseDir = "/tmp/evictguard-e2e"

// RunDir holds every directory, log and mount point this test binary creates, so its leaks can
// be found by prefix and swept without touching other test binaries running concurrently
// (go test ./... runs packages in parallel).
func RunDir() string { return filepath.Join(BaseDir, fmt.Sprintf("run-%d", os.Getpid())) }

// CacheDir is where hack/build-k8s.sh puts kubelet and kube-apiserver.
func CacheDir() string {
	if d := os.Getenv("EVICTGUARD_CACHE"); d != "" {
		return d
	}
	return "/var/cache/evictguard"
}

// Strict reports whether missing prerequisites fail instead of skip (CI).
func Strict() bool { return os.Getenv("EVICTGUARD_E2E_STRICT") == "1" }

// Unavailable skips the test with reason, or fails it in strict mode.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatalf("prerequisite missing (EVICTGUARD_E2E_STRICT=1): %s", msg)
	}
	t.Skipf("skipping: %s", msg)
}

// RequireRoot skips (or fails in strict mode) unless the test runs as root and not -short.
func RequireRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: needs real components; -short given")
	}
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root to mount filesystems and run node components")
	}
}

// Binary returns the path of a program on PATH, or skips/fails naming the package to install.
func Binary(t testing.TB, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, "%s not found on PATH (install Debian package %s, or run hack/setup.sh)", name, debianPackage)
	}
	return p
}

// K8sBinary returns the path of a cached kubelet or kube-apiserver built by hack/build-k8s.sh.
func K8sBinary(t testing.TB, name string) string {
	t.Helper()
	return K8sBinaryVersion(t, name, K8sVersion())
}

// K8sBinaryVersion is K8sBinary at another version (K8sOldVersion's kubelet).
func K8sBinaryVersion(t testing.TB, name, version string) string {
	t.Helper()
	p := filepath.Join(CacheDir(), "k8s-"+version, name)
	if _, err := os.Stat(p); err != nil {
		Unavailable(t, "%s %s not built at %s (run hack/setup.sh)", name, version, p)
	}
	return p
}

// K8sOldVersion is the second, older kubelet the suite runs (hack/k8s-version-old, e.g.
// "v1.29.6": the last minor with four default hard thresholds).
func K8sOldVersion() string {
	_, file := callerFile()
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "hack", "k8s-version-old"))
	if err != nil {
		return "v1.29.6"
	}
	return strings.TrimSpace(string(b))
}

// K8sVersion is the pinned Kubernetes version (hack/k8s-version), e.g. "v1.37.2".
func K8sVersion() string {
	if v := os.Getenv("K8S_VERSION"); v != "" {
		return v
	}
	_, file := callerFile()
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "hack", "k8s-version"))
	if err != nil {
		return "v1.37.2"
	}
	return strings.TrimSpace(string(b))
}

// TempDir makes a fresh directory under RunDir, removed at cleanup (after everything mounted
// or started inside it was torn down, since cleanups run last-in first-out).
func TempDir(t testing.TB, prefix string) string {
	t.Helper()
	if err := os.MkdirAll(RunDir(), 0o755); err != nil {
		t.Fatalf("create %s: %v", RunDir(), err)
	}
	d, err := os.MkdirTemp(RunDir(), sanitize(prefix)+"-")
	if err != nil {
		t.Fatalf("create temp dir: %v", err)
	}
	t.Cleanup(func() {
		if err := UnmountBelow(d); err != nil {
			t.Errorf("unmount below %s: %v", d, err)
		}
		if err := os.RemoveAll(d); err != nil {
			t.Errorf("remove %s: %v", d, err)
		}
	})
	return d
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			return r
		}
		return '-'
	}, s)
}

// TmpFS mounts a real tmpfs of the given size in bytes and inode count (0 = kernel default)
// and returns its mount point. It is unmounted in cleanup.
func TmpFS(t testing.TB, sizeBytes int64, inodes int) string {
	t.Helper()
	RequireRoot(t)
	dir := TempDir(t, "tmpfs")
	opts := fmt.Sprintf("size=%d", sizeBytes)
	if inodes > 0 {
		opts += fmt.Sprintf(",nr_inodes=%d", inodes)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		t.Fatalf("mount tmpfs (%s) on %s: %v", opts, dir, err)
	}
	t.Cleanup(func() {
		if err := UnmountBelow(dir); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// Mounts returns the mount points at or below dir, deepest first.
func Mounts(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dir = filepath.Clean(dir)
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, sc.Err()
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// UnmountBelow unmounts every mount at or below dir, deepest first — the kubelet bind-mounts
// its root dir onto itself and pod volumes below it, so order matters. A mount that stays busy
// is detached lazily as a last resort.
func UnmountBelow(dir string) error {
	var errs []error
	for attempt := 0; attempt < 5; attempt++ {
		mps, err := Mounts(dir)
		if err != nil {
			return err
		}
		if len(mps) == 0 {
			return nil
		}
		errs = errs[:0]
		for _, mp := range mps {
			if err := unix.Unmount(mp, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				if attempt == 4 {
					err = unix.Unmount(mp, unix.MNT_DETACH)
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", mp, err))
				}
			}
		}
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
	}
	return errors.Join(errs...)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Process is a component started by the harness.
type Process struct {
	Name    string
	Cmd     *exec.Cmd
	LogPath string

	done    chan struct{}
	waitErr error
	mu      sync.Mutex
}

// Exited reports whether the process has exited, with its error.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// Log returns the process's combined output so far.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// LogTail returns the last n bytes of the log, for failure messages.
func (p *Process) LogTail(n int) string {
	s := p.Log()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// Stop sends SIGTERM to the process group, waits up to grace, then SIGKILLs it.
func (p *Process) Stop(grace time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ok, _ := p.Exited(); ok {
		return nil
	}
	pgid := p.Cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Children that outlived the leader (same group) get killed too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	return nil
}

// Start runs a component with its output in dir/name.log, in its own process group, killed
// if the test binary dies (PDEATHSIG), and stopped in cleanup.
func Start(t testing.TB, dir, name string, env []string, path string, args ...string) *Process {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("open log for %s: %v", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Process{Name: name, Cmd: cmd, LogPath: logPath, done: make(chan struct{})}
	trackPID(cmd.Process.Pid)
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.Stop(15 * time.Second)
		if t.Failed() {
			t.Logf("--- %s log tail (%s) ---\n%s", name, logPath, p.LogTail(4000))
		}
	})
	return p
}

// WaitFor polls check until it returns nil or the timeout passes; the process, if given, must
// stay alive meanwhile.
func WaitFor(ctx context.Context, timeout time.Duration, p *Process, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if p != nil {
			if ok, err := p.Exited(); ok {
				return fmt.Errorf("%s exited (%w) while waiting; log tail:\n%s", p.Name, err, p.LogTail(3000))
			}
		}
		if last = check(); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out after %s: %w", timeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

var (
	pidsMu  sync.Mutex
	allPIDs []int
)

func trackPID(pid int) {
	pidsMu.Lock()
	allPIDs = append(allPIDs, pid)
	pidsMu.Unlock()
}
