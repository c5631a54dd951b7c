package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/evictguard/evictguard/e2e/harness"
)

// memTolerance is how far evictguard's memory reading may be from the kubelet's for the
// same moment. Both read the same cgroup files; what differs is only when: the kubelet's
// observation carries cAdvisor's sample time, evictguard's snapshot its own, and the two are
// paired within pairWindow. In that time the node's working set moves by what the running
// components (kubelet housekeeping, containerd, this test) allocate and free: measured here at
// 0–3.5 MiB for memory.available, exactly 0 for the pods cgroup (nothing else runs in it)
// and 0–1 task for pid.available. 64 MiB is well under the 420–790 MiB the /proc/meminfo
// approximation was off by, and far from the margins (≥ 600 MiB) the loads keep around each
// threshold, so every met/not-met decision is unambiguous.
const (
	memTolerance = 64 << 20
	// pidTolerance: tasks started or ended between the two readings (the kubelet's
	// housekeeping goroutines are threads, so are containerd's).
	pidTolerance = 64
	pairWindow   = 300 * time.Millisecond
)

// TestMemoryAndPIDSignalsMatchKubelet runs a real kubelet whose memory.available and
// pid.available hard thresholds sit between load levels, with systemReserved shrinking the
// pods cgroup so that allocatableMemory.available is met at a lower load than
// memory.available. At each load — nothing, memory held by a process in the kubelet's pods
// cgroup below and above the memory.available threshold, and a fork load of sleeping
// processes — `evictguard status --watch -o json` (discovering the kubelet from its command
// line) must agree with the kubelet: its values with each eviction manager observation
// (--v=3 log) and with /stats/summary taken at the same moment, within memTolerance and
// pidTolerance, and its met/not-met decision with the eviction manager's, for every signal.
func TestMemoryAndPIDSignalsMatchKubelet(t *testing.T) {
	harness.RequireRoot(t)
	total, ws := testRootMemory(t)
	a0 := total - ws
	// memory.available is met 2.25 GiB below what is available now; the pods cgroup's limit
	// (capacity − systemReserved) is 0.7 GiB above that threshold.
	threshold := a0 - 2304<<20
	reserved := total - threshold - 700<<20
	pid0 := testPIDAvailable(t)
	pidThreshold := pid0 - 1000
	c := harness.StartContainerd(t, harness.ContainerdOptions{})
	k := harness.StartKubelet(t, harness.KubeletOptions{Containerd: c, Flags: []string{"--v=3"},
		ConfigExtra: fmt.Sprintf("evictionHard:\n  memory.available: %q\n  pid.available: %q\nsystemReserved:\n  memory: %q\n",
			fmt.Sprint(threshold), fmt.Sprint(pidThreshold), fmt.Sprint(reserved))})
	procs := "/sys/fs/cgroup/memory/kubepods/cgroup.procs"
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		procs = "/sys/fs/cgroup/kubepods/cgroup.procs"
	}
	watch := harness.Start(t, k.Dir, "evictguard-status", nil, evictguardBinary(t), "status", "--watch", "--interval", "100ms",
		"-o", "json", "--kubelet-cmdline", strings.Join(k.Args, " "))

	rounds := func(after time.Time, n int) []evictionRound {
		t.Helper()
		var got []evictionRound
		err := harness.WaitFor(t.Context(), 90*time.Second, k.Proc, func() error {
			got = nil
			for _, r := range parseEvictionRounds(k.Proc.Log()) {
				if o, ok := r.observed["memory.available"]; ok && o.time.After(after) {
					got = append(got, r)
				}
			}
			if len(got) < n {
				return fmt.Errorf("%d eviction manager rounds observed after %s, want %d", len(got), after.Format(time.RFC3339Nano), n)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%v\nkubelet log tail:\n%s", err, k.Proc.LogTail(3000))
		}
		return got[:n]
	}
	// compare pairs each kubelet observation with the evictguard snapshot nearest in time.
	compare := func(t *testing.T, rs []evictionRound, want map[string]bool) {
		t.Helper()
		samples := parseStatusStream(t, watch.Log())
		for _, r := range rs {
			for _, sig := range []string{"memory.available", "allocatableMemory.available", "pid.available"} {
				o, ok := r.observed[sig]
				if !ok {
					t.Errorf("round at %s: the kubelet has no observation of %s", r.at, sig)
					continue
				}
				s, dt, ok := nearest(samples, o.time, sig)
				if !ok || dt > pairWindow {
					t.Errorf("%s: no evictguard snapshot within %s of the kubelet's observation at %s (nearest %s away)", sig, pairWindow, o.time.Format(time.RFC3339Nano), dt)
					continue
				}
				tol := int64(memTolerance)
				if sig == "pid.available" {
					tol = pidTolerance
				}
				diff := s.Observed - o.available
				t.Logf("%-28s kubelet %d of %d (met %v), evictguard %d of %d (met %v, state %s), difference %+d (%s apart)",
					sig, o.available, o.capacity, r.met[sig], s.Observed, s.Capacity, s.Met, s.State, diff, dt)
				if abs64(diff) > tol || s.Capacity != o.capacity {
					t.Errorf("%s: evictguard %d of %d, the kubelet %d of %d: difference %+d beyond %d", sig, s.Observed, s.Capacity, o.available, o.capacity, diff, tol)
				}
				if s.Met != r.met[sig] || r.met[sig] != want[sig] {
					t.Errorf("%s: evictguard met=%v, the kubelet's eviction manager met=%v, expected %v", sig, s.Met, r.met[sig], want[sig])
				}
			}
		}
		// /stats/summary is what operators see; the same pairing by its sample times.
		sum, err := kubeletMemorySummary(k)
		if err != nil {
			t.Errorf("/stats/summary: %v", err)
			return
		}
		samples = parseStatusStream(t, watch.Log())
		for sig, v := range map[string]summaryMemory{"memory.available": sum.node, "allocatableMemory.available": sum.pods} {
			s, dt, ok := nearest(samples, v.Time, sig)
			if !ok || dt > pairWindow {
				t.Errorf("/stats/summary %s at %s: no evictguard snapshot within %s (nearest %s away)", sig, v.Time.Format(time.RFC3339Nano), pairWindow, dt)
				continue
			}
			diff := s.Observed - v.AvailableBytes
			t.Logf("/stats/summary %-28s %d (working set %d), evictguard %d, difference %+d", sig, v.AvailableBytes, v.WorkingSetBytes, s.Observed, diff)
			if abs64(diff) > memTolerance || s.Capacity != v.AvailableBytes+v.WorkingSetBytes {
				t.Errorf("/stats/summary %s: %d of %d, evictguard %d of %d", sig, v.AvailableBytes, v.AvailableBytes+v.WorkingSetBytes, s.Observed, s.Capacity)
			}
		}
	}

	start := time.Now()
	first := rounds(start, 1)[0]
	d := first.observed["memory.available"].available - threshold
	if d < 1700<<20 {
		t.Fatalf("only %d MiB between memory.available and its threshold after the kubelet started (want ≥ 1700 MiB): the machine's memory moved too much", d>>20)
	}
	t.Logf("memory.available threshold %d, %d MiB above it; pods cgroup limit %d (systemReserved %d); pid.available threshold %d",
		threshold, d>>20, total-reserved, reserved, pidThreshold)

	t.Run("no load", func(t *testing.T) {
		compare(t, rounds(time.Now(), 2), map[string]bool{})
	})
	t.Run("memory growing at 32 MiB/s: time to threshold predicted", func(t *testing.T) {
		const rate = 32 << 20
		begin := time.Now()
		hog := startMemoryHogRate(t, k.Dir, procs, 1<<30, rate)
		defer func() { _ = hog.Stop(5 * time.Second) }()
		// allocatableMemory.available: the pods cgroup holds only the hog, so its fill rate is
		// the hog's. Wait for evictguard to see the threshold met.
		var crossed time.Time
		err := harness.WaitFor(t.Context(), 60*time.Second, hog, func() error {
			for _, s := range parseStatusStream(t, watch.Log()) {
				if sig, ok := hardSignal(s, "allocatableMemory.available"); ok && s.Time.After(begin) && sig.Met {
					crossed = s.Time
					return nil
				}
			}
			return errors.New("evictguard has not seen allocatableMemory.available met yet")
		})
		if err != nil {
			t.Fatal(err)
		}
		// Every prediction made between one predictor window after the start (status --watch
		// keeps 60 samples: 6 s at 100 ms; before that the window still holds the flat part
		// and the Theil–Sen rate lags) and 3 s before the crossing.
		n := 0
		for _, s := range parseStatusStream(t, watch.Log()) {
			if s.Time.Before(begin.Add(6*time.Second)) || s.Time.After(crossed.Add(-3*time.Second)) {
				continue
			}
			sig, _ := hardSignal(s, "allocatableMemory.available")
			if sig.FillRate == nil || sig.SecondsToThreshold == nil {
				t.Errorf("%s: no prediction for allocatableMemory.available at %s", s.Time.Format(time.RFC3339Nano), sig.State)
				continue
			}
			n++
			predicted := s.Time.Add(time.Duration(*sig.SecondsToThreshold * float64(time.Second)))
			lead := crossed.Sub(s.Time)
			if rel := math.Abs(*sig.FillRate-rate) / rate; rel > 0.2 {
				t.Errorf("fill rate %.1f MiB/s, the hog grows at %d MiB/s", *sig.FillRate/(1<<20), rate>>20)
			}
			if off := predicted.Sub(crossed); math.Abs(off.Seconds()) > 0.15*lead.Seconds()+0.5 {
				t.Errorf("at %s predicted the threshold in %.1fs, it was met %.1fs later", s.Time.Format(time.RFC3339Nano), *sig.SecondsToThreshold, lead.Seconds())
			}
			if sig.State != "warning" {
				t.Errorf("allocatableMemory.available is %s %.1fs before its threshold, want warning", sig.State, lead.Seconds())
			}
			if m, ok := hardSignal(s, "memory.available"); ok && (m.FillRate == nil || math.Abs(*m.FillRate-rate)/rate > 0.5) {
				t.Errorf("memory.available fill rate %v, the node's working set grows by %d MiB/s", m.FillRate, rate>>20)
			}
		}
		if n < 10 {
			t.Errorf("only %d predictions between %s and %s", n, begin, crossed)
		}
		t.Logf("%d predictions checked; evictguard saw the threshold met %.1fs after the hog started", n, crossed.Sub(begin).Seconds())
		// The kubelet finds it met too, in its next round.
		r := rounds(crossed, 1)[0]
		if !r.met["allocatableMemory.available"] {
			t.Errorf("the kubelet's first round after %s did not find allocatableMemory.available met", crossed.Format(time.RFC3339Nano))
		}
	})
	below := d - 640<<20
	t.Run(fmt.Sprintf("%d MiB in the pods cgroup: allocatable met, memory not", below>>20), func(t *testing.T) {
		hog := startMemoryHog(t, k.Dir, procs, below)
		defer func() { _ = hog.Stop(5 * time.Second) }()
		compare(t, rounds(time.Now(), 1), map[string]bool{"allocatableMemory.available": true})
	})
	above := d + 640<<20
	t.Run(fmt.Sprintf("%d MiB in the pods cgroup: both met", above>>20), func(t *testing.T) {
		hog := startMemoryHog(t, k.Dir, procs, above)
		defer func() { _ = hog.Stop(5 * time.Second) }()
		compare(t, rounds(time.Now(), 1), map[string]bool{"allocatableMemory.available": true, "memory.available": true})
	})
	t.Run("2000 sleeping processes: pid.available met", func(t *testing.T) {
		bb := harness.Binary(t, "busybox", "busybox-static")
		forks := harness.Start(t, k.Dir, "forks", nil, bb, "sh", "-c",
			"i=0; while [ $i -lt 2000 ]; do "+bb+" sleep 600 & i=$((i+1)); done; echo ready; wait")
		defer func() { _ = forks.Stop(5 * time.Second) }()
		waitLog(t, forks, "ready")
		compare(t, rounds(time.Now(), 1), map[string]bool{"pid.available": true})
	})
	if t.Failed() {
		t.Logf("kubelet log tail:\n%s", k.Proc.LogTail(6000))
	}
}

// memoryHogEnv makes the test binary a memory hog (see TestMain): "PROCS BYTES [RATE]" moves
// it into the cgroup whose cgroup.procs is PROCS, then it faults in BYTES of anonymous memory
// (at RATE bytes per second when given, else at once) and holds it until killed.
const memoryHogEnv = "EVICTGUARD_E2E_MEMORY_HOG"

func startMemoryHog(t *testing.T, dir, procs string, n int64) *harness.Process {
	t.Helper()
	return startMemoryHogRate(t, dir, procs, n, 0)
}

// startMemoryHogRate starts a hog that grows at rate bytes per second (0: at once); it
// returns once the hog has joined the cgroup (rate > 0) or holds everything.
func startMemoryHogRate(t *testing.T, dir, procs string, n, rate int64) *harness.Process {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := harness.Start(t, dir, fmt.Sprintf("hog-%d-%d", n>>20, rate>>20), []string{fmt.Sprintf("%s=%s %d %d", memoryHogEnv, procs, n, rate)}, self)
	waitLog(t, p, "ready")
	return p
}

// runMemoryHog is the hog's body; it returns the exit code.
func runMemoryHog(spec string) int {
	f := strings.Fields(spec)
	if len(f) < 2 {
		fmt.Fprintf(os.Stderr, "hog: bad spec %q\n", spec)
		return 2
	}
	procs := f[0]
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hog: bad size %q\n", f[1])
		return 2
	}
	var rate int64
	if len(f) > 2 {
		if rate, err = strconv.ParseInt(f[2], 10, 64); err != nil {
			fmt.Fprintf(os.Stderr, "hog: bad rate %q\n", f[2])
			return 2
		}
	}
	if err := os.WriteFile(procs, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "hog: join cgroup: %v\n", err)
		return 1
	}
	mem, err := unix.Mmap(-1, 0, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hog: mmap %d: %v\n", n, err)
		return 1
	}
	page := os.Getpagesize()
	if rate > 0 {
		// Fault pages in every 10 ms so that the working set grows smoothly.
		fmt.Println("ready")
		start := time.Now()
		for i := 0; i < len(mem); {
			due := min(int(float64(rate)*time.Since(start).Seconds()), len(mem))
			for ; i < due; i += page {
				mem[i] = 1
			}
			time.Sleep(10 * time.Millisecond)
		}
		fmt.Println("full")
	} else {
		for i := 0; i < len(mem); i += page {
			mem[i] = 1
		}
		fmt.Println("ready")
	}
	for {
		time.Sleep(time.Hour)
	}
}

func waitLog(t *testing.T, p *harness.Process, want string) {
	t.Helper()
	err := harness.WaitFor(t.Context(), 60*time.Second, p, func() error {
		if !strings.Contains(p.Log(), want) {
			return fmt.Errorf("%s has not printed %q", p.Name, want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v: %s", err, p.LogTail(2000))
	}
}

// testRootMemory reads machine memory and the root cgroup's working set directly (cgroup v1,
// or v2's anon + file), to place the thresholds before the kubelet starts.
func testRootMemory(t *testing.T) (total, workingSet int64) {
	t.Helper()
	mi, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	total = meminfoField(t, string(mi), "MemTotal")
	stat := func(file string, keys ...string) int64 {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			for _, k := range keys {
				if len(f) == 2 && f[0] == k {
					n, _ := strconv.ParseInt(f[1], 10, 64)
					sum += n
				}
			}
		}
		return sum
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return total, stat("/sys/fs/cgroup/memory.stat", "anon", "file") - stat("/sys/fs/cgroup/memory.stat", "inactive_file")
	}
	b, err := os.ReadFile("/sys/fs/cgroup/memory/memory.usage_in_bytes")
	if err != nil {
		t.Fatal(err)
	}
	usage, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return total, usage - stat("/sys/fs/cgroup/memory/memory.stat", "total_inactive_file")
}

func meminfoField(t *testing.T, meminfo, key string) int64 {
	t.Helper()
	for _, l := range strings.Split(meminfo, "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			f := strings.Fields(v)
			n, _ := strconv.ParseInt(f[0], 10, 64)
			return n * 1024
		}
	}
	t.Fatalf("/proc/meminfo has no %s", key)
	return 0
}

// testPIDAvailable is min(pid_max, threads-max) − running tasks.
func testPIDAvailable(t *testing.T) int64 {
	t.Helper()
	maxPID := int64(math.MaxInt64)
	for _, f := range []string{"/proc/sys/kernel/pid_max", "/proc/sys/kernel/threads-max"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		maxPID = min(maxPID, n)
	}
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		t.Fatal(err)
	}
	_, tasks, _ := strings.Cut(strings.Fields(string(b))[3], "/")
	n, _ := strconv.ParseInt(tasks, 10, 64)
	return maxPID - n
}

// evictionRound is one synchronize of the kubelet's eviction manager, from its --v=3 log.
type evictionRound struct {
	at       string
	observed map[string]kubeletObservation
	met      map[string]bool
}

type kubeletObservation struct {
	available, capacity int64
	time                time.Time
}

var (
	observationRE = regexp.MustCompile(`"Eviction manager:" log="observations" signal="([^"]+)" resourceName="[^"]*" available="([^"]+)" capacity="([^"]+)"(?: time="([^"]+)")?`)
	metRE         = regexp.MustCompile(`"Eviction manager: threshold observed resource" log="thresholds - ignoring grace period" signal="([^"]+)"`)
)

// parseEvictionRounds splits the kubelet's log at each "synchronize housekeeping" and reads
// the observations and the thresholds met (ignoring grace periods) of each complete round.
func parseEvictionRounds(log string) []evictionRound {
	var out []evictionRound
	var cur *evictionRound
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.Contains(line, "Eviction manager: synchronize housekeeping"):
			if cur != nil && len(cur.observed) > 0 {
				out = append(out, *cur)
			}
			at, _, _ := strings.Cut(line, "]")
			cur = &evictionRound{at: at, observed: map[string]kubeletObservation{}, met: map[string]bool{}}
		case cur == nil:
		case observationRE.MatchString(line):
			m := observationRE.FindStringSubmatch(line)
			a, err1 := resource.ParseQuantity(m[2])
			c, err2 := resource.ParseQuantity(m[3])
			ts, err3 := parseKlogTime(m[4])
			if err1 == nil && err2 == nil && err3 == nil {
				cur.observed[m[1]] = kubeletObservation{available: a.Value(), capacity: c.Value(), time: ts}
			}
		case metRE.MatchString(line):
			cur.met[metRE.FindStringSubmatch(line)[1]] = true
		case strings.Contains(line, "Eviction manager: no resources are starved"),
			strings.Contains(line, "Eviction manager: attempting to reclaim"):
			// the round is complete
			out = append(out, *cur)
			cur = nil
		}
	}
	return out
}

// parseKlogTime reads a time.Time as klog prints it ("2026-12-06 03:05:00.123 +0000 UTC
// m=+1.5").
func parseKlogTime(s string) (time.Time, error) {
	if i := strings.Index(s, " m="); i >= 0 {
		s = s[:i]
	}
	return time.Parse("2006-01-02 15:04:05.999999999 -0700 MST", s)
}

type statusSample struct {
	Time    time.Time      `json:"time"`
	Signals []signalStatus `json:"signals"`
}

type signalStatus struct {
	Signal   string `json:"signal"`
	Kind     string `json:"kind"`
	Observed int64  `json:"observed"`
	Capacity int64  `json:"capacity"`
	Met      bool   `json:"met"`
	State    string `json:"state"`
	Error    string `json:"error"`
	// FillRate is consumption per second; SecondsToThreshold the prediction.
	FillRate           *float64 `json:"fillRatePerSecond"`
	SecondsToThreshold *float64 `json:"secondsToThreshold"`
	Headroom           int64    `json:"headroom"`
}

type signalSample struct {
	Observed, Capacity int64
	Met                bool
	State              string
}

// parseStatusStream reads the JSON lines of `status --watch -o json`.
func parseStatusStream(t *testing.T, log string) []statusSample {
	t.Helper()
	var out []statusSample
	for _, l := range strings.Split(log, "\n") {
		if !strings.HasPrefix(l, `{"time"`) {
			continue
		}
		var s statusSample
		if err := json.Unmarshal([]byte(l), &s); err != nil {
			continue // a line being written
		}
		out = append(out, s)
	}
	return out
}

// hardSignal is the hard threshold of signal in a status snapshot.
func hardSignal(s statusSample, signal string) (signalStatus, bool) {
	for _, sig := range s.Signals {
		if sig.Signal == signal && sig.Kind == "hard" {
			return sig, true
		}
	}
	return signalStatus{}, false
}

// nearest is the sample of signal (hard) closest in time to at.
func nearest(samples []statusSample, at time.Time, signal string) (signalSample, time.Duration, bool) {
	best, bestDt, found := signalSample{}, time.Duration(math.MaxInt64), false
	for _, s := range samples {
		dt := s.Time.Sub(at)
		if dt < 0 {
			dt = -dt
		}
		if dt >= bestDt {
			continue
		}
		for _, sig := range s.Signals {
			if sig.Signal == signal && sig.Kind == "hard" && sig.Error == "" {
				best, bestDt, found = signalSample{sig.Observed, sig.Capacity, sig.Met, sig.State}, dt, true
			}
		}
	}
	return best, bestDt, found
}

type summaryMemory struct {
	Time            time.Time `json:"time"`
	AvailableBytes  int64     `json:"availableBytes"`
	WorkingSetBytes int64     `json:"workingSetBytes"`
}

type memorySummary struct{ node, pods summaryMemory }

// kubeletMemorySummary reads node.memory and the "pods" system container's memory from
// /stats/summary.
func kubeletMemorySummary(k *harness.Kubelet) (*memorySummary, error) {
	b, err := k.Get("/stats/summary")
	if err != nil {
		return nil, err
	}
	var doc struct {
		Node struct {
			Memory           summaryMemory `json:"memory"`
			SystemContainers []struct {
				Name   string        `json:"name"`
				Memory summaryMemory `json:"memory"`
			} `json:"systemContainers"`
		} `json:"node"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("/stats/summary: %w", err)
	}
	out := &memorySummary{node: doc.Node.Memory}
	for _, c := range doc.Node.SystemContainers {
		if c.Name == "pods" {
			out.pods = c.Memory
		}
	}
	if out.pods.Time.IsZero() {
		return nil, fmt.Errorf("/stats/summary has no pods system container: %.400s", b)
	}
	return out, nil
}

func abs64(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}
