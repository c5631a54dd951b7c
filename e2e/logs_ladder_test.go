package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"golang.org/x/sys/unix"

	"github.com/evictguard/evictguard/e2e/harness"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/kubeletcfg"
	"github.com/evictguard/evictguard/monitor"
	"github.com/evictguard/evictguard/reclaim"
)

const mib = 1 << 20

// bufferWriter stands in for a log shipper whose backend is down: it appends fixed-size
// chunks to a buffer directory at a steady rate and remembers each chunk's checksum. It
// never writes below floor bytes available (so the filesystem does not hit ENOSPC).
type bufferWriter struct {
	dir   string
	chunk int
	every time.Duration

	mu      sync.Mutex
	on      bool
	perTick int
	floor   int64
	sums    map[string]string
	written int64
	err     error
}

func (w *bufferWriter) set(on bool, perTick int, floor int64) {
	w.mu.Lock()
	w.on, w.perTick, w.floor = on, perTick, floor
	w.mu.Unlock()
}

func (w *bufferWriter) run(ctx context.Context) {
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	buf := make([]byte, w.chunk)
	tick := time.NewTicker(w.every)
	defer tick.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		w.mu.Lock()
		on, perTick, floor := w.on, w.perTick, w.floor
		w.mu.Unlock()
		for j := 0; on && j < perTick; j++ {
			if statAvail(w.dir) < floor+int64(w.chunk) {
				break
			}
			n = w.write(rng, buf, n)
		}
	}
}

func (w *bufferWriter) write(rng *rand.Rand, buf []byte, n int) int {
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	name := fmt.Sprintf("buffer.%06d.log", n)
	err := os.WriteFile(filepath.Join(w.dir, name), buf, 0o644)
	s := sha256.Sum256(buf)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.err = err
		return n + 1
	}
	w.sums[name] = hex.EncodeToString(s[:])
	w.written += int64(w.chunk)
	return n + 1
}

// verify checks every chunk ever written is still there, byte for byte.
func (w *bufferWriter) verify(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		t.Errorf("buffer writer: %v", w.err)
	}
	for name, want := range w.sums {
		if got := fileSum(t, filepath.Join(w.dir, name), -1); got != want {
			t.Errorf("buffer chunk %s changed or removed", name)
		}
	}
}

// flush is the backend coming back: the shipper sends and deletes its chunks.
func (w *bufferWriter) flush(t *testing.T) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for name := range w.sums {
		if err := os.Remove(filepath.Join(w.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	w.sums = map[string]string{}
}

func statAvail(dir string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0
	}
	return int64(st.Bavail) * st.Frsize
}

// fileSum is the sha256 of the first n bytes of p (all of it when n < 0); "" if missing.
func fileSum(t *testing.T, p string, n int64) string {
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	var r io.Reader = f
	if n >= 0 {
		r = io.LimitReader(f, n)
	}
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestLogsLadderKeepsNodefsAboveThreshold is issue 8's proof. nodefs is a 256 MiB tmpfs
// holding the kubelet's root dir, dockerd's data root (containers writing json-file logs) and
// a log shipper's buffer that grows at 2 MiB/s. With the ladder (ballast + Docker GC allowed)
// headroom above nodefs.available<25% stays positive for the whole run and the kubelet never
// reports DiskPressure; no byte of the active log file or the buffer is removed; GC removes an
// exited container and an unused image but never an image a container (running or stopped)
// uses. When the backend comes back and the buffer drains, the ballast is re-created. The
// budget file and the Node annotation follow headroom within one update period. Finally,
// without evictguard, the same writer drives the real kubelet into DiskPressure.
func TestLogsLadderKeepsNodefsAboveThreshold(t *testing.T) {
	harness.RequireRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	nodefs := harness.TmpFS(t, 256*mib, 0)
	bufferDir := filepath.Join(nodefs, "log", "flb-storage")
	if err := os.MkdirAll(bufferDir, 0o755); err != nil {
		t.Fatal(err)
	}
	d := harness.StartDocker(t, harness.DockerOptions{DataRoot: filepath.Join(nodefs, "docker"),
		DaemonJSON: `{"log-driver": "json-file", "log-opts": {"max-size": "100m"}}`})
	d.ImportBusybox(t, "busybox:keep")
	// app:stopped (a 12 MiB layer) is used only by a stopped container, junk:1 (20 MiB) by
	// nothing; "big" is an exited container with a 16 MiB writable layer, older than
	// "stopped", so a keep count of 1 keeps "stopped".
	d.CLI(t, "run", "--network", "none", "--name", "mk1", "busybox:keep", "dd", "if=/dev/urandom", "of=/blob", "bs=1M", "count=12")
	d.CLI(t, "commit", "mk1", "app:stopped")
	d.CLI(t, "rm", "mk1")
	d.CLI(t, "run", "--network", "none", "--name", "mk2", "busybox:keep", "dd", "if=/dev/urandom", "of=/blob", "bs=1M", "count=20")
	d.CLI(t, "commit", "mk2", "junk:1")
	d.CLI(t, "rm", "mk2")
	d.CLI(t, "run", "--network", "none", "--name", "big", "busybox:keep", "dd", "if=/dev/urandom", "of=/blob", "bs=1M", "count=16")
	time.Sleep(1100 * time.Millisecond) // Created has a resolution of one second
	d.CLI(t, "run", "--network", "none", "--name", "stopped", "app:stopped", "true")
	d.CLI(t, "run", "-d", "--network", "none", "--name", "logger", "busybox:keep", "sh", "-c",
		`i=0; while :; do echo "request $i served in 3ms by the app container"; i=$((i+1)); sleep 0.02; done`)
	loggerID := strings.TrimSpace(d.CLI(t, "inspect", "-f", "{{.Id}}", "logger"))
	activeLog := filepath.Join(d.DataRoot, "containers", loggerID, loggerID+"-json.log")
	imageIDs := map[string]string{}
	for _, ref := range []string{"busybox:keep", "app:stopped", "junk:1"} {
		imageIDs[ref] = strings.TrimSpace(d.CLI(t, "image", "inspect", "-f", "{{.Id}}", ref))
	}

	api := harness.StartAPIServer(t)
	c := harness.StartContainerd(t, harness.ContainerdOptions{})
	k := harness.StartKubelet(t, harness.KubeletOptions{Containerd: c, APIServer: api, NodeName: "logs-node",
		RootDir:     filepath.Join(nodefs, "kubelet"),
		ConfigExtra: "evictionHard:\n  nodefs.available: \"25%\"\n  memory.available: \"1Mi\"\n"})
	if hard, err := k.EvictionHard(); err != nil || hard["nodefs.available"] != "25%" {
		t.Fatalf("kubelet evictionHard = %v (%v)", hard, err)
	}
	err := harness.WaitFor(ctx, 60*time.Second, k.Proc, func() error {
		_, err := api.Client.CoreV1().Nodes().Get(ctx, "logs-node", metav1.GetOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("node not registered: %v", err)
	}

	// evictguard's pieces, as the daemon wires them.
	layout, err := monitor.DiscoverFilesystems(ctx, monitor.DiscoverOptions{HostRoot: "/", KubeletRootDir: k.RootDir,
		Runtime: "docker", DockerSocket: d.Socket, ExtraLogDirs: []string{bufferDir}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := kubeletcfg.ParseVersion(harness.K8sVersion())
	if err != nil {
		t.Fatal(err)
	}
	thresholds, err := kubeletcfg.ParseThresholdConfig(v, nil, map[string]string{"nodefs.available": "25%", "memory.available": "1Mi"}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	mon, err := monitor.New(monitor.Config{Layout: layout, Thresholds: thresholds, KubeletVersion: v.String(), HostRoot: "/",
		Predict: monitor.PredictorConfig{Window: 15 * time.Second, MinSamples: 4, MinSpan: 2 * time.Second},
		Logs:    monitor.LogConfig{Refresh: time.Second}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	stateDir := harness.TempDir(t, "evictguard-state")
	budgetFile := filepath.Join(stateDir, "log-budget.env")
	reg := prometheus.NewRegistry()
	// The annotation's rate limit (5 minutes by default, TestBudgetPublisher) at the loop's
	// period: this test follows headroom over seconds.
	pub, err := reclaim.NewBudgetPublisher(reclaim.BudgetPublisherConfig{File: budgetFile, Kube: productClient(t, api),
		NodeName: "logs-node", Registerer: reg, Log: log, AnnotateEvery: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ballast := &reclaim.Ballast{Path: filepath.Join(nodefs, "evictguard", "ballast"), Size: 32 * mib, RecreateAbove: 72 * mib}
	if err := ballast.Create(); err != nil {
		t.Fatal(err)
	}
	rec := &reportLog{}
	ladder := &reclaim.Ladder{
		Policy: reclaim.Policy{Allow: []string{reclaim.StepBallast, reclaim.StepGC}, Horizon: 20 * time.Second, LowHeadroom: 24 * mib,
			RecreateCooldown: 5 * time.Second},
		FsPath: nodefs, Ballast: ballast, GC: &reclaim.DockerGC{Socket: d.Socket, KeepExited: 1},
		Reporter: journal.MultiReporter{rec, reclaim.EventReporter{Client: productClient(t, api), Node: "logs-node", Log: log}},
		Log:      log,
	}
	if err := ladder.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}

	threshold := func() int64 {
		var st unix.Statfs_t
		if err := unix.Statfs(nodefs, &st); err != nil {
			t.Fatal(err)
		}
		return int64(st.Blocks) * st.Frsize / 4
	}()
	headroom := func() int64 { return statAvail(nodefs) - threshold }

	// Pre-fill the buffer so that headroom starts at ~56 MiB.
	w := &bufferWriter{dir: bufferDir, chunk: 256 << 10, every: 125 * time.Millisecond, sums: map[string]string{}}
	pre := headroom() - 56*mib
	if pre < 0 {
		t.Fatalf("setup left only %d MiB of headroom", headroom()/mib)
	}
	fill(t, filepath.Join(bufferDir, "buffer.prefill.log"), pre)
	preSum := fileSum(t, filepath.Join(bufferDir, "buffer.prefill.log"), -1)
	activeLen := func() int64 { st, _ := os.Stat(activeLog); return st.Size() }()
	activeSum := fileSum(t, activeLog, activeLen)
	t.Logf("setup: headroom %d MiB, threshold %d MiB, active log %d bytes", headroom()/mib, threshold/mib, activeLen)

	// The daemon loop: monitor, budget, ladder every 500 ms while enabled.
	var loopMu sync.Mutex
	ladderOn := true
	var loopErr error
	var minHeadroom int64 = 1 << 62
	budgetChecks := 0
	const period = 500 * time.Millisecond
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			snap, err := mon.Step(ctx)
			if err != nil {
				return
			}
			budgets := reclaim.ComputeLogBudgets(snap, reclaim.BudgetConfig{MarginBytes: 8 * mib, BufferDirs: []string{bufferDir}})
			if _, err := pub.Update(ctx, budgets); err != nil {
				loopMu.Lock()
				loopErr = err
				loopMu.Unlock()
			}
			// The published value is within the material-change band of the current budget.
			if len(budgets) > 0 {
				if got := envValue(budgetFile, "EVICTGUARD_LOG_BUDGET_BYTES"); got < 0 || reclaim.MaterialChange(got, minBytes(budgets)) {
					loopMu.Lock()
					loopErr = fmt.Errorf("budget file says %d, current budget %d", got, minBytes(budgets))
					loopMu.Unlock()
				}
				loopMu.Lock()
				budgetChecks++
				loopMu.Unlock()
			}
			loopMu.Lock()
			on := ladderOn
			loopMu.Unlock()
			if on {
				if _, err := ladder.Step(ctx, snap); err != nil {
					log.Warn("ladder", "err", err)
				}
			}
		}
	}()
	// An independent sampler of headroom, 10 times a second.
	sampleDone := make(chan struct{})
	sampleCtx, stopSampling := context.WithCancel(ctx)
	go func() {
		defer close(sampleDone)
		for sampleCtx.Err() == nil {
			h := headroom()
			loopMu.Lock()
			minHeadroom = min(minHeadroom, h)
			loopMu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
	}()

	// Phase 1: the backend is down for 50 s: 100 MiB against 56 MiB of headroom.
	go w.run(ctx)
	kubeletLogStart := len(k.Proc.Log())
	w.set(true, 1, threshold-8*mib)
	time.Sleep(50 * time.Second)
	w.set(false, 0, 0)
	stopSampling()
	<-sampleDone
	loopMu.Lock()
	minH, lErr := minHeadroom, loopErr
	loopMu.Unlock()
	t.Logf("phase 1: buffer wrote %d MiB; minimum headroom %d MiB; headroom now %d MiB", w.written/mib, minH/mib, headroom()/mib)
	if w.written < 90*mib {
		t.Errorf("buffer writer wrote only %d MiB", w.written/mib)
	}
	if minH <= 0 {
		t.Errorf("headroom fell to %d bytes: the threshold was crossed", minH)
	}
	if lErr != nil {
		t.Errorf("daemon loop: %v", lErr)
	}
	if seg := k.Proc.Log()[kubeletLogStart:]; strings.Contains(seg, "NodeHasDiskPressure") {
		t.Errorf("kubelet reported DiskPressure while the ladder ran")
	}
	w.verify(t)
	if got := fileSum(t, filepath.Join(bufferDir, "buffer.prefill.log"), -1); got != preSum {
		t.Errorf("pre-filled buffer changed")
	}
	if got := fileSum(t, activeLog, activeLen); got != activeSum {
		t.Errorf("the active container log lost bytes")
	}
	acts := rec.byAction()
	t.Logf("reports: %v", rec.all())
	if acts[reclaim.StepBallast] != 1 || acts[reclaim.StepGC] == 0 || acts[reclaim.BallastRecreate] != 0 {
		t.Errorf("want one ballast release, GC, and no re-creation while the disk fills: %v", acts)
	}
	if st, _ := ballast.State(); st.Present {
		t.Errorf("ballast still present after the ladder ran")
	}
	evs, err := api.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=logs-node"})
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	for _, e := range evs.Items {
		if e.Source.Component == "evictguard" {
			reasons[e.Reason] = e.Message
		}
	}
	if !strings.Contains(reasons["ReclaimBallast"], "33554432 bytes") || !strings.Contains(reasons["ReclaimRuntimeGC"], "applied") {
		t.Errorf("Node Events for the reclaim steps missing or without bytes: %v", reasons)
	}
	// GC: the exited "big" and the unused junk:1 are gone; everything a container uses stays.
	if out, err := d.TryCLI("inspect", "big"); err == nil {
		t.Errorf("exited container big survived GC: %s", out)
	}
	if _, err := d.TryCLI("image", "inspect", "junk:1"); err == nil {
		t.Errorf("unused image junk:1 survived GC")
	}
	for _, ref := range []string{"busybox:keep", "app:stopped"} {
		if id, err := d.TryCLI("image", "inspect", "-f", "{{.Id}}", ref); err != nil || strings.TrimSpace(id) != imageIDs[ref] {
			t.Errorf("GC removed %s, used by a container: %v %s", ref, err, id)
		}
	}
	for _, name := range []string{"stopped", "logger"} {
		if _, err := d.TryCLI("inspect", name); err != nil {
			t.Errorf("GC removed container %s (kept by the keep count / running)", name)
		}
	}
	if running := strings.TrimSpace(d.CLI(t, "inspect", "-f", "{{.State.Running}}", "logger")); running != "true" {
		t.Errorf("logger not running")
	}
	if n := testutil.ToFloat64(counterOf(t, reg, "evictguard_reclaimed_bytes_total", reclaim.StepBallast)); n < 32*mib {
		t.Errorf("evictguard_reclaimed_bytes_total{action=ballast} = %v", n)
	}

	// Phase 2: the backend is back; the shipper drains its buffer; the ballast returns.
	w.flush(t)
	err = harness.WaitFor(ctx, 15*time.Second, k.Proc, func() error {
		if st, _ := ballast.State(); !st.Present || st.Allocated < ballast.Size {
			return fmt.Errorf("ballast not re-created (headroom %d MiB)", headroom()/mib)
		}
		return nil
	})
	if err != nil {
		t.Errorf("after pressure: %v", err)
	}
	// Budget file and annotation follow headroom within one update period (+ the step).
	time.Sleep(2 * period)
	snap := mon.Latest()
	want := reclaim.ComputeLogBudgets(snap, reclaim.BudgetConfig{MarginBytes: 8 * mib, BufferDirs: []string{bufferDir}})
	if got := envValue(budgetFile, "EVICTGUARD_LOG_BUDGET_BYTES"); len(want) == 0 || reclaim.MaterialChange(got, minBytes(want)) {
		t.Errorf("budget file %d, budget from headroom %v", got, want)
	}
	node, err := api.Client.CoreV1().Nodes().Get(ctx, "logs-node", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := strconv.ParseInt(node.Annotations[reclaim.AnnotationLogBudget], 10, 64); reclaim.MaterialChange(a, minBytes(want)) {
		t.Errorf("node annotation %q, budget %d", node.Annotations[reclaim.AnnotationLogBudget], minBytes(want))
	}
	loopMu.Lock()
	t.Logf("budget: %d publications over %d checks; now %d MiB", pub.Publications(), budgetChecks, minBytes(want)/mib)
	loopMu.Unlock()

	// Phase 3: without evictguard, the same shipper outage drives the kubelet into DiskPressure.
	loopMu.Lock()
	ladderOn = false
	loopMu.Unlock()
	from := len(k.Proc.Log())
	w.set(true, 8, threshold-16*mib) // 16 MiB/s: no need to wait a minute for the same end

	err = harness.WaitFor(ctx, 120*time.Second, k.Proc, func() error {
		if strings.Contains(k.Proc.Log()[from:], "NodeHasDiskPressure") {
			return nil
		}
		return fmt.Errorf("no NodeHasDiskPressure yet (headroom %d MiB)", headroom()/mib)
	})
	if err != nil {
		t.Errorf("without evictguard: %v", err)
	}
	w.set(false, 0, 0)
	cancel()
	<-loopDone
}

// reportLog records the ladder's reports.
type reportLog struct {
	mu sync.Mutex
	r  []journal.Report
}

func (l *reportLog) Report(_ context.Context, r journal.Report) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.r = append(l.r, r)
}

func (l *reportLog) byAction() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := map[string]int{}
	for _, r := range l.r {
		if r.Result == journal.ResultApplied {
			m[r.Action]++
		}
	}
	return m
}

func (l *reportLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.r {
		out = append(out, r.Action+"="+r.Result+" ("+r.Reason+")")
	}
	return out
}

// envValue reads an integer KEY=VALUE from an env file (-1 if absent).
func envValue(path, key string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// counterOf returns the child of a registered counter vector with one label value.
func counterOf(t *testing.T, reg *prometheus.Registry, name, action string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			for _, lp := range m.Label {
				if lp.GetName() == "action" && lp.GetValue() == action {
					g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
					g.Set(m.GetCounter().GetValue())
					return g
				}
			}
		}
	}
	return prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
}

func minBytes(budgets []reclaim.LogBudget) int64 {
	m := int64(-1)
	for _, b := range budgets {
		if m < 0 || b.Bytes < m {
			m = b.Bytes
		}
	}
	return m
}
