// Command benchcmp measures, in one run on this machine, evictguard's monitoring cycle
// against node_exporter's filesystem collector on the same mounts, and the steady RSS of
// `evictguard run`. hack/bench.sh (make bench) builds evictguard and runs it.
//
// Method. The cycle is Monitor.Step built exactly as `evictguard run` builds it (same
// discovery, thresholds and settings): statfs of every distinct filesystem, the log walk's
// budget, /proc/meminfo and pid.available, evaluation, prediction. node_exporter
// (Debian's prometheus-node-exporter) runs on 127.0.0.1 with only the filesystem collector,
// its mount-point exclude regex letting through exactly the mountpoints evictguard samples.
// The three measurements alternate, n times, so that they share the machine's noise:
//
//   - one Monitor.Step in this process (wall time);
//   - one node_exporter /metrics scrape over HTTP (wall time, keep-alive and gzip as
//     Prometheus scrapes), and the in-process time its filesystem collector reports for that
//     scrape (node_scrape_collector_duration_seconds{collector="filesystem"});
//   - one scrape of `evictguard run`'s /metrics (which serves the latest cycle, so its cost
//     is encoding and HTTP only).
//
// The ratio, cycle / node_exporter scrape, is checked against the target. Two more
// are printed for context, without a verdict, because they do not compare like with like:
// cycle / node_exporter collector (in process against in process — our cycle also reads
// /proc/meminfo and pid.available, about 40 % of it, which a filesystem collector does not);
// and (cycle + our scrape) / node_exporter scrape (end to end, as if every cycle were
// scraped — our scrape carries client_golang's process collector, which reads /proc/stat
// and /proc/self/net/netstat on every scrape, and a larger payload).
// The RSS is VmRSS of an `evictguard run` (with --listen) scraped every -rss-scrape-interval
// as Prometheus would, read -rss-after after its start; a second daemon serves the
// comparison's back-to-back scrapes, and its RSS is shown as the worst case.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec" //nolint:depguard // a benchmark harness, not product code: it starts the daemons it measures
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/evictguard/evictguard/kubeletcfg"
	"github.com/evictguard/evictguard/monitor"
)

type options struct {
	evictguard, nodeExporter       string
	n                              int
	rssAfter, rssScrapeInterval    time.Duration
	kubeletCmdline, kubeletVersion string
	runtime                        string
	targetRatio                    float64
	targetRSSMiB                   float64
	workDir                        string
}

func main() {
	var o options
	flag.StringVar(&o.evictguard, "evictguard", "", "evictguard binary to run as the daemon (required)")
	flag.StringVar(&o.nodeExporter, "node-exporter", "/usr/bin/prometheus-node-exporter", "node_exporter binary")
	flag.IntVar(&o.n, "n", 1000, "measurements of each kind")
	flag.DurationVar(&o.rssAfter, "rss-after", 60*time.Second, "read the daemon's RSS this long after it started")
	flag.DurationVar(&o.rssScrapeInterval, "rss-scrape-interval", 15*time.Second, "scrape the daemon whose RSS is read this often, as Prometheus would")
	flag.StringVar(&o.kubeletCmdline, "kubelet-cmdline", "", "kubelet arguments for evictguard (--kubelet-cmdline); empty: discovery")
	flag.StringVar(&o.kubeletVersion, "kubelet-version", "", "kubelet version for evictguard (--kubelet-version)")
	flag.StringVar(&o.runtime, "runtime", "", "container runtime for evictguard (--runtime)")
	flag.Float64Var(&o.targetRatio, "target-ratio", 0.5, "maximum ratio of our cycle to node_exporter's scrape")
	flag.Float64Var(&o.targetRSSMiB, "target-rss-mib", 40, "maximum steady RSS of evictguard run, MiB")
	flag.StringVar(&o.workDir, "work-dir", "", "directory for the processes' logs (default: a temporary directory)")
	flag.Parse()
	if o.evictguard == "" || o.n <= 0 {
		fmt.Fprintln(os.Stderr, "benchcmp: -evictguard is required and -n must be positive")
		os.Exit(2)
	}
	ok, err := run(context.Background(), o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchcmp:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) (bool, error) {
	if o.workDir == "" {
		d, err := os.MkdirTemp("", "evictguard-bench-")
		if err != nil {
			return false, err
		}
		defer os.RemoveAll(d)
		o.workDir = d
	}

	// The monitor as `evictguard run` builds it (cmd/evictguard newSetup).
	m, layout, eff, err := newMonitor(ctx, o)
	if err != nil {
		return false, err
	}
	defer m.Close()
	var mounts []string
	for _, fs := range layout.Filesystems {
		if fs.Mountpoint != "" && !slices.Contains(mounts, fs.Mountpoint) {
			mounts = append(mounts, fs.Mountpoint)
		}
	}
	slices.Sort(mounts)
	fmt.Printf("layout: %d filesystems on %d mounts %v, %d signals (kubelet %s, %d thresholds)\n",
		len(layout.Filesystems), len(mounts), mounts, len(m.Thresholds()), eff.Version, len(eff.Thresholds))

	// Two daemons: one scraped as Prometheus would (every -rss-scrape-interval) whose RSS is
	// read -rss-after after its start, started first; one scraped back to back for the
	// comparison (its RSS is shown too, as the worst case).
	egArgs := func(addr string) []string {
		return append([]string{"run", "--interval", "1s", "--listen", addr, "--log-level", "warn"}, passThrough(o)...)
	}
	rssAddr, err := freeAddr()
	if err != nil {
		return false, err
	}
	rssEG, err := start(filepath.Join(o.workDir, "evictguard-rss.log"), o.evictguard, egArgs(rssAddr)...)
	if err != nil {
		return false, err
	}
	defer rssEG.stop()
	rssStart := time.Now()
	scrapeCtx, stopScrapes := context.WithCancel(ctx)
	defer stopScrapes()
	go func() {
		hc := &http.Client{Timeout: 10 * time.Second}
		t := time.NewTicker(o.rssScrapeInterval)
		defer t.Stop()
		for {
			select {
			case <-scrapeCtx.Done():
				return
			case <-t.C:
				_, _, _ = scrape(hc, "http://"+rssAddr+"/metrics")
			}
		}
	}()

	egAddr, err := freeAddr()
	if err != nil {
		return false, err
	}
	eg, err := start(filepath.Join(o.workDir, "evictguard.log"), o.evictguard, egArgs(egAddr)...)
	if err != nil {
		return false, err
	}
	defer eg.stop()

	allMounts, err := readMountpoints("/proc/1/mountinfo") // node_exporter reads /proc/1/mounts: the same mountpoints
	if err != nil {
		return false, err
	}
	exclude := excludeRegex(allMounts, mounts)
	neAddr, err := freeAddr()
	if err != nil {
		return false, err
	}
	ne, err := start(filepath.Join(o.workDir, "node_exporter.log"), o.nodeExporter,
		"--web.listen-address="+neAddr, "--collector.disable-defaults", "--collector.filesystem",
		"--collector.filesystem.mount-points-exclude="+exclude)
	if err != nil {
		return false, err
	}
	defer ne.stop()

	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
	egURL, neURL := "http://"+egAddr+"/metrics", "http://"+neAddr+"/metrics"
	for _, w := range []struct {
		p   *proc
		url string
	}{{rssEG, "http://" + rssAddr + "/readyz"}, {eg, "http://" + egAddr + "/readyz"}, {ne, neURL}} {
		if err := waitOK(hc, w.p, w.url, 30*time.Second); err != nil {
			return false, err
		}
	}

	// node_exporter must report exactly our mounts, no more, no fewer.
	body, _, err := scrape(hc, neURL)
	if err != nil {
		return false, err
	}
	neMounts := labelValues(body, "node_filesystem_avail_bytes", "mountpoint")
	slices.Sort(neMounts)
	neMounts = slices.Compact(neMounts)
	if !slices.Equal(neMounts, mounts) {
		return false, fmt.Errorf("node_exporter reports mountpoints %v, evictguard samples %v (exclude regex %q)", neMounts, mounts, exclude)
	}

	// Warm up: fill the predictors' windows (as a running daemon has them), warm both servers.
	for range 70 {
		if _, err := m.Step(ctx); err != nil {
			return false, err
		}
	}
	for range 20 {
		if _, _, err := scrape(hc, neURL); err != nil {
			return false, err
		}
		if _, _, err := scrape(hc, egURL); err != nil {
			return false, err
		}
	}

	cycle := make([]time.Duration, 0, o.n)
	neWall := make([]time.Duration, 0, o.n)
	neColl := make([]time.Duration, 0, o.n)
	egWall := make([]time.Duration, 0, o.n)
	for range o.n {
		t0 := time.Now()
		if _, err := m.Step(ctx); err != nil {
			return false, err
		}
		cycle = append(cycle, time.Since(t0))

		body, d, err := scrape(hc, neURL)
		if err != nil {
			return false, err
		}
		neWall = append(neWall, d)
		if c, ok := collectorDuration(body, "filesystem"); ok {
			neColl = append(neColl, c)
		}

		_, d, err = scrape(hc, egURL)
		if err != nil {
			return false, err
		}
		egWall = append(egWall, d)
	}
	if len(neColl) == 0 {
		return false, errors.New("node_exporter reported no node_scrape_collector_duration_seconds{collector=\"filesystem\"}")
	}

	hammered, err := readStatus(eg.cmd.Process.Pid)
	if err != nil {
		return false, fmt.Errorf("evictguard run: %w (log: %s)", err, eg.logTail())
	}
	eg.stop()
	ne.stop()

	// Steady RSS: sample once a second until -rss-after, keep the last and the peak.
	var rss, peak procStatus
	for {
		s, err := readStatus(rssEG.cmd.Process.Pid)
		if err != nil {
			return false, fmt.Errorf("evictguard run: %w (log: %s)", err, rssEG.logTail())
		}
		rss = s
		peak.VmRSS = max(peak.VmRSS, s.VmRSS)
		if time.Since(rssStart) >= o.rssAfter {
			break
		}
		time.Sleep(min(time.Second, o.rssAfter-time.Since(rssStart)))
	}
	for _, p := range []*proc{rssEG, eg} {
		if exited, err := p.exited(); exited && p == rssEG {
			return false, fmt.Errorf("evictguard run exited (%w): %s", err, p.logTail())
		}
	}

	c, nw, nc, ew := median(cycle), median(neWall), median(neColl), median(egWall)
	mib := func(kb int64) float64 { return float64(kb) / 1024 }
	ok := true
	verdict := func(v, target float64) string {
		if v <= target {
			return "PASS"
		}
		ok = false
		return "MISS"
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nFIGURE (median of %d, interleaved)\tVALUE\tP90\tTARGET\tRESULT\n", o.n)
	fmt.Fprintf(tw, "evictguard cycle (Monitor.Step, in process)\t%s\t%s\t\t\n", us(c), us(p90(cycle)))
	fmt.Fprintf(tw, "node_exporter scrape (HTTP /metrics, filesystem collector)\t%s\t%s\t\t\n", us(nw), us(p90(neWall)))
	fmt.Fprintf(tw, "node_exporter filesystem collector (in process, its own figure)\t%s\t%s\t\t\n", us(nc), us(p90(neColl)))
	fmt.Fprintf(tw, "evictguard scrape (HTTP /metrics of evictguard run)\t%s\t%s\t\t\n", us(ew), us(p90(egWall)))
	r1 := float64(c) / float64(nw)
	r2 := float64(c) / float64(nc)
	r3 := float64(c+ew) / float64(nw)
	fmt.Fprintf(tw, "ratio cycle / node_exporter scrape\t%.2fx\t\t<= %.2fx\t%s\n", r1, o.targetRatio, verdict(r1, o.targetRatio))
	// Context only (see the package doc): no verdict.
	fmt.Fprintf(tw, "  context: cycle / node_exporter collector (in process; ours adds meminfo, pids)\t%.2fx\t\t\t\n", r2)
	fmt.Fprintf(tw, "  context: (cycle + our scrape) / node_exporter scrape (end to end)\t%.2fx\t\t\t\n", r3)
	fmt.Fprintf(tw, "evictguard run RSS after %s, scraped every %s (VmRSS)\t%.1f MiB\t\t<= %.0f MiB\t%s\n", o.rssAfter, o.rssScrapeInterval, mib(rss.VmRSS), o.targetRSSMiB, verdict(mib(rss.VmRSS), o.targetRSSMiB))
	fmt.Fprintf(tw, "  of which anonymous / file-backed (binary pages)\t%.1f / %.1f MiB\t\t\t\n", mib(rss.RssAnon), mib(rss.RssFile))
	fmt.Fprintf(tw, "  peak VmRSS sampled / VmHWM\t%.1f / %.1f MiB\t\t\t\n", mib(peak.VmRSS), mib(rss.VmHWM))
	fmt.Fprintf(tw, "  the daemon scraped %d times back to back (VmRSS, anon / file)\t%.1f MiB (%.1f / %.1f)\t\t\t\n", 20+o.n, mib(hammered.VmRSS), mib(hammered.RssAnon), mib(hammered.RssFile))
	if err := tw.Flush(); err != nil {
		return false, err
	}
	return ok, nil
}

func passThrough(o options) []string {
	var a []string
	if o.kubeletCmdline != "" {
		a = append(a, "--kubelet-cmdline", o.kubeletCmdline)
	}
	if o.kubeletVersion != "" {
		a = append(a, "--kubelet-version", o.kubeletVersion)
	}
	if o.runtime != "" {
		a = append(a, "--runtime", o.runtime)
	}
	return a
}

// newMonitor mirrors cmd/evictguard's newSetup with run's settings and flag defaults.
func newMonitor(ctx context.Context, o options) (*monitor.Monitor, *monitor.Layout, *kubeletcfg.Effective, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	kopts := kubeletcfg.Options{HostRoot: "/", Version: o.kubeletVersion, Logger: quiet}
	if o.kubeletCmdline != "" {
		words, err := kubeletcfg.SplitCommandLine(o.kubeletCmdline)
		if err != nil {
			return nil, nil, nil, err
		}
		kopts.Cmdline = words
	}
	eff, err := kubeletcfg.Discover(ctx, kopts)
	if err != nil {
		return nil, nil, nil, err
	}
	dopts := monitor.DiscoverOptions{HostRoot: "/", Runtime: o.runtime, Logger: quiet}
	if eff.KubeletFound {
		dopts.KubeletRootDir, dopts.CRIEndpoint = eff.RootDir, eff.ContainerRuntimeEndpoint
	}
	layout, err := monitor.DiscoverFilesystems(ctx, dopts)
	if err != nil {
		return nil, nil, nil, err
	}
	m, err := monitor.New(monitor.Config{
		Layout: layout, Thresholds: eff.Thresholds, KubeletVersion: eff.Version, HostRoot: "/",
		StatfsTimeout: 2 * time.Second, LogTransitions: true, Logger: quiet,
		Eval: monitor.EvalConfig{WarnHorizon: time.Hour, WarnMargin: 0.05},
	})
	if err != nil {
		return nil, nil, nil, err
	}
	return m, layout, eff, nil
}

type proc struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

func start(logPath, bin string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &proc{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); f.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitOK(hc *http.Client, p *proc, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if exited, err := p.exited(); exited {
			return fmt.Errorf("%s exited (%w): %s", p.cmd.Path, err, p.logTail())
		}
		resp, err := hc.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %w", url, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// scrape GETs url as Prometheus does (gzip, kept-alive connection) and returns the body and
// the wall time until it was read in full.
func scrape(hc *http.Client, url string) ([]byte, time.Duration, error) {
	t0 := time.Now()
	resp, err := hc.Get(url)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	d := time.Since(t0)
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, d, nil
}

// collectorDuration reads node_scrape_collector_duration_seconds{collector="name"}.
func collectorDuration(body []byte, name string) (time.Duration, bool) {
	prefix := []byte(`node_scrape_collector_duration_seconds{collector="` + name + `"} `)
	for line := range bytes.Lines(body) {
		if v, ok := bytes.CutPrefix(line, prefix); ok {
			f, err := strconv.ParseFloat(string(bytes.TrimSpace(v)), 64)
			if err != nil {
				return 0, false
			}
			return time.Duration(f * float64(time.Second)), true
		}
	}
	return 0, false
}

// labelValues returns the values of label on every sample of metric.
func labelValues(body []byte, metric, label string) []string {
	re := regexp.MustCompile(`(?:[{,])` + regexp.QuoteMeta(label) + `="((?:[^"\\]|\\.)*)"`)
	var out []string
	for line := range bytes.Lines(body) {
		if !bytes.HasPrefix(line, []byte(metric+"{")) {
			continue
		}
		if m := re.FindSubmatch(line); m != nil {
			out = append(out, string(m[1]))
		}
	}
	return out
}

// readMountpoints returns the mountpoints of a mountinfo file (proc(5)), escapes decoded.
func readMountpoints(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	infos, err := mountinfo.GetMountsFromReader(f, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := make([]string, 0, len(infos))
	for _, m := range infos {
		out = append(out, m.Mountpoint)
	}
	return out, nil
}

// excludeRegex builds node_exporter's --collector.filesystem.mount-points-exclude so that of
// all mountpoints only keep pass (node_exporter 1.5 has no include flag, and RE2 no
// lookahead). Each other mountpoint is excluded by its shortest prefix that holds no kept
// mountpoint (so "/sys/fs/cgroup/cpu" goes as "/sys", like node_exporter's own default
// regex, and mounts that appear later under it stay excluded), or exactly when a kept
// mountpoint lies below it.
func excludeRegex(all, keep []string) string {
	holdsKept := func(p string) bool {
		return slices.ContainsFunc(keep, func(k string) bool {
			return k == p || p == "/" || strings.HasPrefix(k, p+"/")
		})
	}
	var prefixes, exact []string
	for _, m := range all {
		if slices.Contains(keep, m) {
			continue
		}
		chosen := ""
		parts := strings.Split(strings.TrimPrefix(m, "/"), "/")
		for i := range parts {
			p := "/" + strings.Join(parts[:i+1], "/")
			if !holdsKept(p) {
				chosen = p
				break
			}
		}
		if chosen != "" {
			prefixes = append(prefixes, regexp.QuoteMeta(chosen))
		} else {
			exact = append(exact, regexp.QuoteMeta(m))
		}
	}
	slices.Sort(prefixes)
	prefixes = slices.Compact(prefixes)
	slices.Sort(exact)
	exact = slices.Compact(exact)
	var alts []string
	if len(prefixes) > 0 {
		alts = append(alts, "(?:"+strings.Join(prefixes, "|")+")(?:$|/)")
	}
	if len(exact) > 0 {
		alts = append(alts, "(?:"+strings.Join(exact, "|")+")$")
	}
	if len(alts) == 0 {
		return "^$" // nothing to exclude ("" would mean node_exporter's default)
	}
	return "^(?:" + strings.Join(alts, "|") + ")"
}

type procStatus struct{ VmRSS, VmHWM, RssAnon, RssFile int64 } // kB

func readStatus(pid int) (procStatus, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procStatus{}, err
	}
	var s procStatus
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			s.VmRSS = n
		case "VmHWM":
			s.VmHWM = n
		case "RssAnon":
			s.RssAnon = n
		case "RssFile":
			s.RssFile = n
		}
	}
	return s, nil
}

func median(d []time.Duration) time.Duration { return quantile(d, 0.5) }
func p90(d []time.Duration) time.Duration    { return quantile(d, 0.9) }

func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }
