package reclaim

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"

	"github.com/evictguard/evictguard/internal/atomicfile"
	"github.com/evictguard/evictguard/internal/kube"
	"github.com/evictguard/evictguard/journal"
	"github.com/evictguard/evictguard/monitor"
)

// Log budget outputs.
const (
	// AnnotationLogBudget is the Node annotation carrying the smallest budget, in bytes.
	AnnotationLogBudget = "evictguard.dev/log-budget-bytes"
	// DefaultLogBudgetFile is where the env file goes when enabled without a path.
	DefaultLogBudgetFile = journal.DefaultStateDir + "/log-budget.env"
	// FluentBitSnippetName and FluentdSnippetName sit next to the env file.
	FluentBitSnippetName = "log-budget.fluent-bit.conf"
	FluentdSnippetName   = "log-budget.fluentd.conf"
)

// LogBudget is what the log pipeline may still write on one filesystem before the nearest
// eviction threshold on it, less a safety margin.
type LogBudget struct {
	// Role is the kubelet role of the filesystem (nodefs, imagefs, containerfs); a log
	// directory on a filesystem the kubelet does not evict on has role "logs".
	Role       string `json:"role"`
	Mountpoint string `json:"mountpoint"`
	// LogDirs are the log directories (node paths) on this filesystem.
	LogDirs []string `json:"logDirs"`
	// Signal is the binding signal (least headroom); "" when none applies.
	Signal   string `json:"signal,omitempty"`
	Headroom int64  `json:"headroomBytes"`
	Margin   int64  `json:"marginBytes"`
	// Bytes = max(0, Headroom − Margin): still available to the pipeline.
	Bytes int64 `json:"bytes"`
	// BufferBytes is what the configured buffer directories on this filesystem hold now;
	// BufferLimit = BufferBytes + Bytes is the total size a buffer limit should be set to.
	BufferBytes int64 `json:"bufferBytes"`
	BufferLimit int64 `json:"bufferLimitBytes"`
}

// BudgetConfig tunes ComputeLogBudgets.
type BudgetConfig struct {
	// MarginBytes and MarginPercent (of capacity) are kept free above the threshold; the
	// larger applies (default 5 % of capacity).
	MarginBytes   int64
	MarginPercent float64
	// BufferDirs are the pipeline's buffer directories (node paths), as passed to the
	// monitor's ExtraLogDirs; their current size is added to the limit.
	BufferDirs []string
}

// ComputeLogBudgets returns one budget per filesystem that holds a log directory, in the
// order the log directories appear in the snapshot. Filesystems without a usable sample are
// left out.
func ComputeLogBudgets(snap *monitor.Snapshot, cfg BudgetConfig) []LogBudget {
	if snap == nil {
		return nil
	}
	if cfg.MarginBytes <= 0 && cfg.MarginPercent <= 0 {
		cfg.MarginPercent = 5
	}
	var out []LogBudget
	index := map[uint64]int{}
	for _, fs := range snap.Filesystems {
		if fs.Role != monitor.RoleLogs || fs.Error != "" || fs.CapacityBytes == 0 {
			continue
		}
		i, ok := index[fs.Dev]
		if !ok || fs.Dev == 0 {
			b := LogBudget{Role: string(monitor.RoleLogs), Mountpoint: fs.Mountpoint, Headroom: fs.AvailableBytes}
			b.Margin = max(cfg.MarginBytes, int64(math.Ceil(cfg.MarginPercent/100*float64(fs.CapacityBytes))))
			bindBudget(&b, snap, fs.Dev)
			i = len(out)
			index[fs.Dev] = i
			out = append(out, b)
		}
		b := &out[i]
		b.LogDirs = append(b.LogDirs, fs.Path)
		if fs.LogBytes != nil && slices.Contains(cfg.BufferDirs, fs.Path) {
			b.BufferBytes += *fs.LogBytes
		}
	}
	for i := range out {
		b := &out[i]
		b.Bytes = max(0, b.Headroom-b.Margin)
		b.BufferLimit = b.BufferBytes + b.Bytes
	}
	return out
}

// bindBudget finds the *.available signal with the least headroom on the filesystem dev.
func bindBudget(b *LogBudget, snap *monitor.Snapshot, dev uint64) {
	roles := map[string]bool{}
	for _, fs := range snap.Filesystems {
		if fs.Role != monitor.RoleLogs && fs.Dev == dev && dev != 0 {
			roles[string(fs.Role)] = true
		}
	}
	found := false
	for _, role := range []monitor.Role{monitor.RoleNodeFs, monitor.RoleImageFs, monitor.RoleContainerFs} {
		if !roles[string(role)] {
			continue
		}
		for _, sig := range snap.Signals {
			if sig.Signal != string(role)+".available" || sig.Error != "" || sig.State == monitor.StateUnknown {
				continue
			}
			if !found || sig.Headroom < b.Headroom {
				b.Signal, b.Headroom, b.Role, found = sig.Signal, sig.Headroom, string(role), true
			}
		}
		if !found && b.Role == string(monitor.RoleLogs) {
			b.Role = string(role)
		}
	}
}

// MaterialChange reports whether a budget moved enough to be published again: by more than
// 10 % of the old value or more than 64 MiB, or to or from zero.
func MaterialChange(old, cur int64) bool {
	if old == cur {
		return false
	}
	if old == 0 || cur == 0 {
		return true
	}
	d := cur - old
	if d < 0 {
		d = -d
	}
	return d > 64<<20 || float64(d) > 0.10*float64(old)
}

// BudgetPublisherConfig says where budgets go.
type BudgetPublisherConfig struct {
	// File is the env file (host path as this process sees it); "" disables the file and
	// the snippets, which are written next to it.
	File string
	// FluentdOverflowAction is written into the fluentd snippet (default
	// "drop_oldest_chunk"; "-" leaves it out).
	FluentdOverflowAction string
	// Kube and NodeName enable the Node annotation.
	Kube     kube.Interface
	NodeName string
	// AnnotateEvery is the least time between two writes of the annotation (default 5m).
	// The files on the node follow every material change; the annotation is an API request,
	// and a node whose log filesystem moves by more than a material change every minute
	// (image pulls, rotations on a shared root filesystem) would otherwise cost the API
	// server a request a minute, over the fleet's budget of one per node per minute for
	// everything (docs/architecture.md). A budget that reaches or leaves zero — log shippers
	// must stop, or may start again — is annotated at once.
	AnnotateEvery time.Duration
	// Registerer, when set, gets the evictguard_log_budget_bytes gauge.
	Registerer prometheus.Registerer
	Log        *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// BudgetPublisher exports budgets: the gauge every Update, the files only when the smallest
// budget changed materially (MaterialChange) or the budgets' filesystems changed, and the
// Node annotation on a material change at most every AnnotateEvery (at once to or from zero).
type BudgetPublisher struct {
	cfg   BudgetPublisherConfig
	gauge *prometheus.GaugeVec

	mu        sync.Mutex
	published []LogBudget
	have      bool
	// annotated is the budget last written to the annotation (annotatedAt), if any.
	annotated      int64
	annotatedAt    time.Time
	annotatedValid bool
	// count is the number of publications (files and annotation); see Publications.
	count int
	// labels are the gauge's current children, so stale ones can be deleted without a
	// Reset that a concurrent scrape could observe as an empty gauge.
	labels map[[2]string]bool
}

// NewBudgetPublisher registers the gauge (if a Registerer is given).
func NewBudgetPublisher(cfg BudgetPublisherConfig) (*BudgetPublisher, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.FluentdOverflowAction == "" {
		cfg.FluentdOverflowAction = "drop_oldest_chunk"
	}
	if cfg.AnnotateEvery <= 0 {
		cfg.AnnotateEvery = 5 * time.Minute
	}
	p := &BudgetPublisher{cfg: cfg}
	p.gauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "evictguard", Name: "log_budget_bytes",
		Help: "Bytes the log pipeline may still write on a filesystem before its nearest eviction threshold, less the safety margin.",
	}, []string{"role", "mountpoint"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(p.gauge); err != nil {
			return nil, fmt.Errorf("register log budget gauge: %w", err)
		}
	}
	return p, nil
}

// Publications returns how many times the files/annotation were written.
func (p *BudgetPublisher) Publications() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count
}

// Update sets the gauge and, when the budgets changed materially, writes the files and the
// annotation. It returns whether it published.
func (p *BudgetPublisher) Update(ctx context.Context, budgets []LogBudget) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := map[[2]string]bool{}
	for _, b := range budgets {
		p.gauge.WithLabelValues(b.Role, b.Mountpoint).Set(float64(b.Bytes))
		cur[[2]string{b.Role, b.Mountpoint}] = true
	}
	for l := range p.labels {
		if !cur[l] {
			p.gauge.DeleteLabelValues(l[0], l[1])
		}
	}
	p.labels = cur
	if len(budgets) == 0 {
		return false, nil
	}
	filesDue := !p.have || budgetsChanged(p.published, budgets)
	annotate := p.annotationDue(minBudget(budgets).Bytes)
	if !filesDue && !annotate {
		return false, nil
	}
	var errs []error
	if filesDue && p.cfg.File != "" {
		if err := p.writeFiles(budgets); err != nil {
			errs = append(errs, err)
		}
	}
	if annotate {
		if err := p.annotate(ctx, budgets); err != nil {
			errs = append(errs, err)
		} else {
			p.annotated, p.annotatedAt, p.annotatedValid = minBudget(budgets).Bytes, p.cfg.Now(), true
		}
	}
	if len(errs) > 0 {
		return false, fmt.Errorf("publish log budget: %w", errs[0])
	}
	if filesDue {
		p.published, p.have = slices.Clone(budgets), true
	}
	p.count++
	p.cfg.Log.Info("log budget published", "bytes", minBudget(budgets).Bytes, "bufferLimit", minBudget(budgets).BufferLimit,
		"signal", minBudget(budgets).Signal, "file", p.cfg.File, "files", filesDue, "annotation", annotate)
	return true, nil
}

// annotationDue reports whether the annotation should be written with budget: it differs
// materially from the one written, and either AnnotateEvery has passed or it reaches or
// leaves zero.
func (p *BudgetPublisher) annotationDue(budget int64) bool {
	if p.cfg.Kube == nil || p.cfg.NodeName == "" {
		return false
	}
	if !p.annotatedValid {
		return true
	}
	if !MaterialChange(p.annotated, budget) {
		return false
	}
	return (p.annotated == 0) != (budget == 0) || p.cfg.Now().Sub(p.annotatedAt) >= p.cfg.AnnotateEvery
}

func budgetsChanged(old, cur []LogBudget) bool {
	if len(old) != len(cur) {
		return true
	}
	for i := range old {
		if old[i].Mountpoint != cur[i].Mountpoint || MaterialChange(old[i].Bytes, cur[i].Bytes) ||
			MaterialChange(old[i].BufferLimit, cur[i].BufferLimit) {
			return true
		}
	}
	return false
}

// minBudget is the budget with the fewest bytes (budgets must not be empty).
func minBudget(budgets []LogBudget) LogBudget {
	m := budgets[0]
	for _, b := range budgets[1:] {
		if b.Bytes < m.Bytes {
			m = b
		}
	}
	return m
}

func (p *BudgetPublisher) writeFiles(budgets []LogBudget) error {
	now := p.cfg.Now()
	dir := filepath.Dir(p.cfg.File)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	files := []struct {
		name string
		data []byte
	}{
		{p.cfg.File, RenderBudgetEnv(budgets, now)},
		{filepath.Join(dir, FluentBitSnippetName), RenderFluentBitSnippet(budgets, now)},
		{filepath.Join(dir, FluentdSnippetName), RenderFluentdSnippet(budgets, now, p.cfg.FluentdOverflowAction)},
	}
	for _, f := range files {
		if err := atomicfile.WriteFile(f.name, f.data, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	return nil
}

func (p *BudgetPublisher) annotate(ctx context.Context, budgets []LogBudget) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		AnnotationLogBudget: fmt.Sprint(minBudget(budgets).Bytes),
	}}})
	if err != nil {
		return err
	}
	if _, err := p.cfg.Kube.PatchNode(ctx, p.cfg.NodeName, types.MergePatchType, patch); err != nil {
		return fmt.Errorf("annotate node %s: %w", p.cfg.NodeName, err)
	}
	return nil
}

// envName turns a role into an env-var fragment.
func envName(role string) string {
	return strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(role))
}

// RenderBudgetEnv renders the env file: KEY=VALUE lines, values in bytes, sourceable by a
// shell and usable as a systemd EnvironmentFile or a fluent-bit ${VAR} source.
func RenderBudgetEnv(budgets []LogBudget, now time.Time) []byte {
	var b strings.Builder
	b.WriteString("# Generated by evictguard; do not edit. Bytes the log pipeline may still use before eviction.\n")
	m := minBudget(budgets)
	fmt.Fprintf(&b, "EVICTGUARD_LOG_BUDGET_BYTES=%d\n", m.Bytes)
	fmt.Fprintf(&b, "EVICTGUARD_LOG_BUFFER_LIMIT_BYTES=%d\n", m.BufferLimit)
	fmt.Fprintf(&b, "EVICTGUARD_LOG_BUDGET_SIGNAL=%s\n", shellWord(m.Signal))
	seen := map[string]bool{}
	for _, x := range budgets {
		if seen[x.Role] {
			continue
		}
		seen[x.Role] = true
		fmt.Fprintf(&b, "EVICTGUARD_LOG_BUDGET_%s_BYTES=%d\n", envName(x.Role), x.Bytes)
		fmt.Fprintf(&b, "EVICTGUARD_LOG_BUDGET_%s_MOUNTPOINT=%s\n", envName(x.Role), shellWord(x.Mountpoint))
	}
	fmt.Fprintf(&b, "EVICTGUARD_LOG_BUDGET_UPDATED=%s\n", now.UTC().Format(time.RFC3339))
	return []byte(b.String())
}

// shellWord quotes s for a shell and systemd unless it is plainly safe.
func shellWord(s string) string {
	safe := func(r rune) bool {
		return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-:", r)
	}
	if s != "" && strings.IndexFunc(s, func(r rune) bool { return !safe(r) }) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// RenderFluentBitSnippet renders a fluent-bit classic-format file to @INCLUDE at the top of
// fluent-bit.conf. It defines EVICTGUARD_LOG_BUFFER_LIMIT for use as
// `storage.total_limit_size ${EVICTGUARD_LOG_BUFFER_LIMIT}` in each [OUTPUT] that buffers on
// the filesystem (the limit is per output: divide it when several do).
func RenderFluentBitSnippet(budgets []LogBudget, now time.Time) []byte {
	m := minBudget(budgets)
	var b strings.Builder
	fmt.Fprintf(&b, "# Generated by evictguard at %s; do not edit.\n", now.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "# Budget on %s (%s, binding signal %s): %d bytes free for logs, %d already buffered.\n",
		m.Mountpoint, m.Role, orNone(m.Signal), m.Bytes, m.BufferBytes)
	b.WriteString("# Include at the top of fluent-bit.conf:  @INCLUDE " + FluentBitSnippetName + "\n")
	b.WriteString("# then in each [OUTPUT] buffering on disk:  storage.total_limit_size ${EVICTGUARD_LOG_BUFFER_LIMIT}\n")
	fmt.Fprintf(&b, "@SET EVICTGUARD_LOG_BUFFER_LIMIT=%s\n", sizeBytes(m.BufferLimit))
	fmt.Fprintf(&b, "@SET EVICTGUARD_LOG_BUDGET_BYTES=%d\n", m.Bytes)
	return []byte(b.String())
}

// RenderFluentdSnippet renders parameters to @include inside a fluentd <buffer> section.
func RenderFluentdSnippet(budgets []LogBudget, now time.Time, overflowAction string) []byte {
	m := minBudget(budgets)
	var b strings.Builder
	fmt.Fprintf(&b, "# Generated by evictguard at %s; do not edit.\n", now.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "# Budget on %s (%s, binding signal %s): %d bytes free for logs, %d already buffered.\n",
		m.Mountpoint, m.Role, orNone(m.Signal), m.Bytes, m.BufferBytes)
	b.WriteString("# Include inside the file <buffer> section:  @include " + FluentdSnippetName + "\n")
	fmt.Fprintf(&b, "total_limit_size %s\n", sizeBytes(m.BufferLimit))
	if overflowAction != "-" && overflowAction != "" {
		fmt.Fprintf(&b, "overflow_action %s\n", overflowAction)
	}
	return []byte(b.String())
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// sizeBytes renders a size as plain bytes: fluent-bit reads "K" as 1000 and fluentd "k"
// as 1024, so a suffix would mean different things to each. At least 1, because 0 means
// "unlimited" to fluent-bit.
func sizeBytes(n int64) string {
	return fmt.Sprint(max(1, n))
}
