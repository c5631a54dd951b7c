package reclaim

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/evictguard/evictguard/internal/kube/kubetest"
	"github.com/evictguard/evictguard/monitor"
)

func i64(v int64) *int64 { return &v }

func budgetSnapshot(nodefsHeadroom, imagefsHeadroom int64, imageDev uint64) *monitor.Snapshot {
	fs := func(role monitor.Role, path, mp string, dev uint64, logBytes *int64) monitor.FilesystemStatus {
		return monitor.FilesystemStatus{Filesystem: monitor.Filesystem{Role: role, Path: path, Mountpoint: mp, Dev: dev},
			CapacityBytes: 10 << 30, AvailableBytes: 5 << 30, LogBytes: logBytes}
	}
	return &monitor.Snapshot{
		Filesystems: []monitor.FilesystemStatus{
			fs(monitor.RoleNodeFs, "/var/lib/kubelet", "/", 1, nil),
			fs(monitor.RoleImageFs, "/var/lib/docker", "/data", imageDev, nil),
			fs(monitor.RoleLogs, "/var/log/pods", "/", 1, i64(100<<20)),
			fs(monitor.RoleLogs, "/var/log/flb-storage", "/", 1, i64(300<<20)),
			fs(monitor.RoleLogs, "/data/docker/containers", "/data", imageDev, i64(1<<20)),
		},
		Signals: []monitor.SignalStatus{
			{Signal: "nodefs.available", State: monitor.StateOK, Headroom: nodefsHeadroom},
			{Signal: "nodefs.inodesFree", State: monitor.StateOK, Headroom: 5},
			{Signal: "imagefs.available", State: monitor.StateOK, Headroom: imagefsHeadroom},
		},
	}
}

func TestComputeLogBudgets(t *testing.T) {
	tests := []struct {
		name string
		snap *monitor.Snapshot
		cfg  BudgetConfig
		want []LogBudget
	}{
		{
			name: "nodefs and a separate imagefs",
			snap: budgetSnapshot(2<<30, 8<<30, 2),
			cfg:  BudgetConfig{MarginBytes: 100 << 20, BufferDirs: []string{"/var/log/flb-storage"}},
			want: []LogBudget{
				{Role: "nodefs", Mountpoint: "/", LogDirs: []string{"/var/log/pods", "/var/log/flb-storage"}, Signal: "nodefs.available",
					Headroom: 2 << 30, Margin: 100 << 20, Bytes: 2<<30 - 100<<20, BufferBytes: 300 << 20, BufferLimit: 2<<30 - 100<<20 + 300<<20},
				{Role: "imagefs", Mountpoint: "/data", LogDirs: []string{"/data/docker/containers"}, Signal: "imagefs.available",
					Headroom: 8 << 30, Margin: 100 << 20, Bytes: 8<<30 - 100<<20, BufferLimit: 8<<30 - 100<<20},
			},
		},
		{
			name: "imagefs on nodefs: the tighter signal binds; percent margin",
			snap: budgetSnapshot(2<<30, 1<<30, 1),
			cfg:  BudgetConfig{MarginPercent: 1},
			want: []LogBudget{
				{Role: "imagefs", Mountpoint: "/", LogDirs: []string{"/var/log/pods", "/var/log/flb-storage", "/data/docker/containers"},
					Signal: "imagefs.available", Headroom: 1 << 30, Margin: 107374183, Bytes: 1<<30 - 107374183, BufferLimit: 1<<30 - 107374183},
			},
		},
		{
			name: "past the threshold: zero",
			snap: budgetSnapshot(-5<<20, 1<<30, 2),
			cfg:  BudgetConfig{MarginBytes: 1},
			want: []LogBudget{
				{Role: "nodefs", Mountpoint: "/", LogDirs: []string{"/var/log/pods", "/var/log/flb-storage"}, Signal: "nodefs.available",
					Headroom: -5 << 20, Margin: 1, Bytes: 0, BufferLimit: 0},
				{Role: "imagefs", Mountpoint: "/data", LogDirs: []string{"/data/docker/containers"}, Signal: "imagefs.available",
					Headroom: 1 << 30, Margin: 1, Bytes: 1<<30 - 1, BufferLimit: 1<<30 - 1},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ComputeLogBudgets(tc.snap, tc.cfg)
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestMaterialChange(t *testing.T) {
	tests := []struct {
		old, cur int64
		want     bool
	}{
		{100 << 20, 100 << 20, false},
		{100 << 20, 105 << 20, false},
		{100 << 20, 111 << 20, true},
		{100 << 20, 89 << 20, true},
		{10 << 30, 10<<30 + 60<<20, false},
		{10 << 30, 10<<30 + 65<<20, true},
		{0, 1, true},
		{1 << 20, 0, true},
	}
	for _, tc := range tests {
		if got := MaterialChange(tc.old, tc.cur); got != tc.want {
			t.Errorf("MaterialChange(%d, %d) = %v, want %v", tc.old, tc.cur, got, tc.want)
		}
	}
}

func TestBudgetPublisher(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "state", "log-budget.env")
	kube := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	reg := prometheus.NewPedanticRegistry()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	p, err := NewBudgetPublisher(BudgetPublisherConfig{File: file, Kube: kubetest.New(kube), NodeName: "n1", Registerer: reg,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const margin = 10 << 20
	budget := func(headroom int64) string { return fmt.Sprint(max(0, headroom-margin)) }
	// One Update a minute. The files follow every material change; the annotation (an API
	// request) at most every 5 minutes, except to or from zero.
	steps := []struct {
		headroom   int64
		file       bool   // the env file is rewritten
		annotation string // the annotation afterwards
	}{
		{1 << 30, true, budget(1 << 30)},
		{1<<30 - 50<<20, false, budget(1 << 30)},          // −5 %, < 64 MiB
		{1<<30 - 60<<20, false, budget(1 << 30)},          // −5.9 %, < 64 MiB
		{1<<30 - 120<<20, true, budget(1 << 30)},          // −11.7 %: the files; the annotation waits
		{1<<30 - 120<<20, false, budget(1 << 30)},         // still waiting (4 minutes)
		{1<<30 - 120<<20, false, budget(1<<30 - 120<<20)}, // 5 minutes: the annotation follows
		{margin, true, "0"},                               // zero: at once
		{1<<30 - 120<<20, true, budget(1<<30 - 120<<20)},  // and back from zero: at once
	}
	for i, s := range steps {
		b := ComputeLogBudgets(budgetSnapshot(s.headroom, 8<<30, 1), BudgetConfig{MarginBytes: margin})
		before, _ := os.ReadFile(file)
		if _, err := p.Update(ctx, b); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		env, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if s.file && !strings.Contains(string(env), "EVICTGUARD_LOG_BUDGET_BYTES="+budget(s.headroom)+"\n") {
			t.Errorf("step %d: env file lacks budget %s:\n%s", i, budget(s.headroom), env)
		}
		if !s.file && string(env) != string(before) {
			t.Errorf("step %d: env file rewritten without a material change", i)
		}
		n, err := kube.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := n.Annotations[AnnotationLogBudget]; got != s.annotation {
			t.Errorf("step %d: annotation = %q, want %q", i, got, s.annotation)
		}
		now = now.Add(time.Minute)
	}
	if n := p.Publications(); n != 5 {
		t.Errorf("publications = %d, want 5 (steps 1, 4, 6, 7, 8)", n)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(fmt.Sprintf(`# HELP evictguard_log_budget_bytes Bytes the log pipeline may still write on a filesystem before its nearest eviction threshold, less the safety margin.
# TYPE evictguard_log_budget_bytes gauge
evictguard_log_budget_bytes{mountpoint="/",role="nodefs"} %d
`, int64(1<<30-120<<20-margin))), "evictguard_log_budget_bytes"); err != nil {
		t.Error(err)
	}
	// A filesystem that goes away loses its series; the others stay.
	moved := []LogBudget{{Role: "nodefs", Mountpoint: "/var", Bytes: 1}}
	if _, err := p.Update(ctx, moved); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(p.gauge); n != 1 {
		t.Errorf("gauge has %d series after the move, want 1", n)
	}
	if v := testutil.ToFloat64(p.gauge.WithLabelValues("nodefs", "/var")); v != 1 {
		t.Errorf("gauge{/var} = %v", v)
	}
	// The env file is valid KEY=VALUE for shells and systemd.
	env, _ := os.ReadFile(file)
	for _, line := range strings.Split(strings.TrimSpace(string(env)), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if !regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=([A-Za-z0-9/._:-]+|'[^']*')$`).MatchString(line) {
			t.Errorf("env line not KEY=VALUE: %q", line)
		}
	}
}

// --- fluent-bit classic format, strictly -------------------------------------------------

var fluentBitSections = map[string]bool{"SERVICE": true, "INPUT": true, "FILTER": true, "OUTPUT": true,
	"PARSER": true, "MULTILINE_PARSER": true, "PLUGINS": true, "UPSTREAM": true, "NODE": true, "CUSTOM": true}

type fbSection struct {
	name  string
	props map[string]string
}

// parseFluentBit applies fluent-bit's classic-mode rules (docs "Configuration file", "Format
// and schema", "Commands", "Variables"): commands @INCLUDE/@SET at column 0; [SECTION] at
// column 0 with a known name; entries "key value" indented with spaces (never tabs), the same
// indentation throughout a section, only inside a section; comments start with '#';
// ${VAR} expands @SET variables or the environment and an undefined one is an error here.
func parseFluentBit(t *testing.T, dir, name string, vars map[string]string, out *[]fbSection) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	varRef := regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
	indent := ""
	var cur *fbSection
	sc := bufio.NewScanner(bytes.NewReader(data))
	for ln := 1; sc.Scan(); ln++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		where := fmt.Sprintf("%s:%d", name, ln)
		switch {
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
			continue
		case strings.ContainsRune(line, '\t'):
			t.Fatalf("%s: tab in line", where)
		case strings.HasPrefix(line, "@SET "):
			k, v, ok := strings.Cut(strings.TrimSpace(line[5:]), "=")
			if !ok || k == "" || strings.ContainsAny(k, " ") || v == "" {
				t.Fatalf("%s: bad @SET %q", where, line)
			}
			vars[k] = v
		case strings.HasPrefix(line, "@INCLUDE "):
			parseFluentBit(t, dir, strings.TrimSpace(line[9:]), vars, out)
		case strings.HasPrefix(line, "@"):
			t.Fatalf("%s: unknown command %q", where, line)
		case strings.HasPrefix(line, "["):
			if !strings.HasSuffix(line, "]") || !fluentBitSections[strings.ToUpper(line[1:len(line)-1])] {
				t.Fatalf("%s: bad section header %q", where, line)
			}
			*out = append(*out, fbSection{name: strings.ToUpper(line[1 : len(line)-1]), props: map[string]string{}})
			cur, indent = &(*out)[len(*out)-1], ""
		default:
			if cur == nil {
				t.Fatalf("%s: entry outside a section: %q", where, line)
			}
			ind := line[:len(line)-len(strings.TrimLeft(line, " "))]
			if ind == "" {
				t.Fatalf("%s: entry not indented: %q", where, line)
			}
			if indent == "" {
				indent = ind
			} else if ind != indent {
				t.Fatalf("%s: inconsistent indentation", where)
			}
			k, v, ok := strings.Cut(trimmed, " ")
			if !ok || strings.TrimSpace(v) == "" {
				t.Fatalf("%s: entry without value: %q", where, line)
			}
			v = varRef.ReplaceAllStringFunc(strings.TrimSpace(v), func(m string) string {
				name := m[2 : len(m)-1]
				if x, ok := vars[name]; ok {
					return x
				}
				t.Fatalf("%s: undefined variable %s", where, name)
				return ""
			})
			cur.props[strings.ToLower(k)] = v
		}
	}
}

// fluentBitSize is flb_utils_size_to_bytes: digits, optional K/KB/M/MB/G/GB (any case).
func fluentBitSize(s string) (int64, bool) {
	m := regexp.MustCompile(`^([0-9]+)([kKmMgG][bB]?)?$`).FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, false
	}
	mult := map[string]int64{"": 1, "K": 1000, "M": 1000 * 1000, "G": 1000 * 1000 * 1000}[strings.ToUpper(strings.TrimSuffix(strings.ToUpper(m[2]), "B"))]
	return n * mult, true
}

// --- fluentd v1 format, strictly ----------------------------------------------------------

// parseFluentd applies fluentd's v1 config rules for what a <buffer> snippet may contain:
// "<name [arg]>" / "</name>" balanced, "key value" parameters, "@include file" resolved
// relative to dir at the place it appears, '#' comments; it returns the parameters of every
// <buffer> section.
func parseFluentd(t *testing.T, dir, name string, stack *[]string, buffers *[]map[string]string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	param := regexp.MustCompile(`^(@?[a-z_][a-z0-9_]*)\s+(\S.*)$`)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		where := fmt.Sprintf("%s:%d", name, ln)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "</"):
			tag := strings.TrimSuffix(strings.TrimPrefix(line, "</"), ">")
			if len(*stack) == 0 || (*stack)[len(*stack)-1] != tag {
				t.Fatalf("%s: unbalanced %q", where, line)
			}
			*stack = (*stack)[:len(*stack)-1]
		case strings.HasPrefix(line, "<"):
			if !strings.HasSuffix(line, ">") {
				t.Fatalf("%s: bad section %q", where, line)
			}
			tag, _, _ := strings.Cut(strings.TrimSuffix(line[1:], ">"), " ")
			*stack = append(*stack, tag)
			if tag == "buffer" {
				*buffers = append(*buffers, map[string]string{})
			}
		case strings.HasPrefix(line, "@include "):
			parseFluentd(t, dir, strings.TrimSpace(line[9:]), stack, buffers)
		default:
			m := param.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("%s: not a parameter: %q", where, line)
			}
			if len(*stack) == 0 {
				t.Fatalf("%s: parameter outside a section: %q", where, line)
			}
			if (*stack)[len(*stack)-1] == "buffer" {
				(*buffers)[len(*buffers)-1][m[1]] = m[2]
			}
		}
	}
}

// fluentdSize is Fluent::Config.size_value.
func fluentdSize(s string) (int64, bool) {
	m := regexp.MustCompile(`^([0-9]+)([kmgtKMGT]?)$`).FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n * map[string]int64{"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[strings.ToLower(m[2])], true
}

func TestSnippetsAreValidConfig(t *testing.T) {
	for _, limit := range []int64{0, 1, 123456789, 64 << 30} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			dir := t.TempDir()
			budgets := []LogBudget{{Role: "nodefs", Mountpoint: "/", Signal: "nodefs.available", Bytes: limit, BufferLimit: limit}}
			now := time.Now()
			if err := os.WriteFile(filepath.Join(dir, FluentBitSnippetName), RenderFluentBitSnippet(budgets, now), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, FluentdSnippetName), RenderFluentdSnippet(budgets, now, "drop_oldest_chunk"), 0o644); err != nil {
				t.Fatal(err)
			}
			main := "@INCLUDE " + FluentBitSnippetName + `

[SERVICE]
    flush        1
    storage.path /var/log/flb-storage/

[INPUT]
    name         tail
    path         /var/log/containers/*.log
    storage.type filesystem

[OUTPUT]
    name                     es
    match                    *
    storage.total_limit_size ${EVICTGUARD_LOG_BUFFER_LIMIT}
`
			if err := os.WriteFile(filepath.Join(dir, "fluent-bit.conf"), []byte(main), 0o644); err != nil {
				t.Fatal(err)
			}
			var sections []fbSection
			parseFluentBit(t, dir, "fluent-bit.conf", map[string]string{}, &sections)
			if len(sections) != 3 || sections[2].name != "OUTPUT" {
				t.Fatalf("sections = %+v", sections)
			}
			got, ok := fluentBitSize(sections[2].props["storage.total_limit_size"])
			if !ok || got != max(1, limit) {
				t.Errorf("fluent-bit storage.total_limit_size = %q (%d), want %d bytes", sections[2].props["storage.total_limit_size"], got, max(1, limit))
			}

			fd := `<match kubernetes.**>
  @type elasticsearch
  <buffer>
    @type file
    path /var/log/fluentd-buffers/kubernetes.system.buffer
    @include ` + FluentdSnippetName + `
  </buffer>
</match>
`
			if err := os.WriteFile(filepath.Join(dir, "fluent.conf"), []byte(fd), 0o644); err != nil {
				t.Fatal(err)
			}
			var stack []string
			var buffers []map[string]string
			parseFluentd(t, dir, "fluent.conf", &stack, &buffers)
			if len(stack) != 0 || len(buffers) != 1 {
				t.Fatalf("stack %v buffers %v", stack, buffers)
			}
			n, ok := fluentdSize(buffers[0]["total_limit_size"])
			if !ok || n != max(1, limit) {
				t.Errorf("fluentd total_limit_size = %q, want %d", buffers[0]["total_limit_size"], max(1, limit))
			}
			if a := buffers[0]["overflow_action"]; a != "drop_oldest_chunk" {
				t.Errorf("overflow_action = %q", a)
			}
		})
	}
}
