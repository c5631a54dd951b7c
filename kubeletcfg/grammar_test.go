package kubeletcfg

import (
	"strings"
	"testing"
)

func TestParseThresholdStatement(t *testing.T) {
	v137, v17 := mustVersion("1.37"), mustVersion("1.7")
	tests := []struct {
		v        Version
		sig, val string
		want     string // Raw, "" for disabled
		wantPct  float32
		err      string
	}{
		{v137, "nodefs.available", "10%", "10%", 0.1, ""},
		{v137, "memory.available", "100Mi", "100Mi", 0, ""},
		{v137, "memory.available", "1024Ki", "1024Ki", 0, ""}, // verbatim, as /configz shows it
		{v137, "nodefs.inodesFree", "1e6", "1e6", 0, ""},
		{v137, "nodefs.available", "0%", "", 0, ""},
		{v137, "nodefs.available", "100%", "", 0, ""},
		{v137, "nodefs.available", "0.0%", "0.0%", 0, ""},
		{v137, "nodefs.available", "101%", "", 0, "eviction percentage threshold nodefs.available must be <= 100%: 101%"},
		{v137, "nodefs.available", "-1%", "", 0, "eviction percentage threshold nodefs.available must be >= 0%: -1%"},
		{v137, "nodefs.available", " 10%", "", 0, `strconv.ParseFloat: parsing " 10": invalid syntax`},
		{v137, "nodefs.available", "0", "", 0, "eviction threshold nodefs.available must be positive: 0"},
		{v137, "nodefs.available", "-5Gi", "", 0, "eviction threshold nodefs.available must be positive: -5Gi"},
		{v137, "nodefs.available", "lots", "", 0, "quantities must match the regular expression"},
		{v137, "swap.available", "1Gi", "", 0, "unsupported eviction signal swap.available"},
		{v137, "allocatableNodeFs.available", "1Gi", "", 0, "unsupported eviction signal allocatableNodeFs.available"},
		{v137, "pid.available", "1000", "1000", 0, ""},
		// The kubelet's range checks let NaN through (NaN < 0 and NaN > 1 are false).
		{v137, "nodefs.available", "NaN%", "NaN%", 0, "skip-pct"},
		{v137, "containerfs.available", "10%", "10%", 0.1, ""},
		{mustVersion("1.28"), "containerfs.available", "10%", "", 0, "unsupported eviction signal containerfs.available"},
		{v17, "nodefs.available", "0%", "", 0, "eviction percentage threshold nodefs.available must be positive: 0%"},
		{v17, "nodefs.available", "100%", "100%", 1, ""},
		{v17, "pid.available", "100", "", 0, "unsupported eviction signal pid.available"},
		{v17, "allocatableNodeFs.available", "1Gi", "1Gi", 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.v.String()+"/"+tc.sig+"<"+tc.val, func(t *testing.T) {
			th, err := parseThresholdStatement(tc.v, tc.sig, tc.val)
			if tc.err == "skip-pct" {
				if err != nil || th == nil || th.Raw != tc.want {
					t.Fatalf("got %+v, %v", th, err)
				}
				return
			}
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if th != nil {
					t.Fatalf("want disabled, got %+v", th)
				}
				return
			}
			if th == nil || th.Raw != tc.want || th.Value.Percentage != tc.wantPct {
				t.Fatalf("got %+v, want raw %q pct %v", th, tc.want, tc.wantPct)
			}
		})
	}
}

func TestParseThresholdConfig(t *testing.T) {
	v := mustVersion("1.35")
	ts, err := ParseThresholdConfig(v, []string{"pods"},
		map[string]string{"memory.available": "100Mi", "imagefs.available": "0%", "nodefs.available": "10%"},
		map[string]string{"memory.available": "300Mi"},
		map[string]string{"memory.available": "30s", "nodefs.available": "1m"},
		map[string]string{"memory.available": "5%", "nodefs.available": "0"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, th := range ts {
		got = append(got, string(th.Kind)+" "+th.Signal+" "+th.Raw+" "+th.GracePeriod.String()+" "+th.MinimumReclaim)
	}
	want := []string{
		"hard memory.available 100Mi 0s 5%",
		"hard allocatableMemory.available 100Mi 0s 5%",
		"hard nodefs.available 10% 0s 0",
		"soft memory.available 300Mi 30s 5%",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	for _, tc := range []struct {
		name                        string
		hard, soft, grace, minimumR map[string]string
		err                         string
	}{
		{"soft without grace", nil, map[string]string{"memory.available": "1Gi"}, nil, nil, "grace period must be specified for the soft eviction threshold memory.available"},
		{"negative grace", nil, nil, map[string]string{"memory.available": "-1s"}, nil, "invalid eviction grace period specified: -1s, must be a positive value"},
		{"bad grace", nil, nil, map[string]string{"memory.available": "soon"}, nil, `time: invalid duration "soon"`},
		{"grace unknown signal", nil, nil, map[string]string{"disk": "1s"}, nil, "unsupported eviction signal disk"},
		{"min reclaim 0%", nil, nil, nil, map[string]string{"memory.available": "0%"}, "eviction percentage minimum reclaim memory.available must be positive: 0%"},
		{"min reclaim negative", nil, nil, nil, map[string]string{"memory.available": "-1"}, "negative eviction minimum reclaim specified for memory.available"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseThresholdConfig(v, nil, tc.hard, tc.soft, tc.grace, tc.minimumR)
			if err == nil || err.Error() != tc.err {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
}

func TestDefaultEvictionHard(t *testing.T) {
	tests := []struct {
		v, goos string
		want    string
	}{
		{"1.7", "linux", "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%"},
		{"1.10", "windows", "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%"},
		{"1.25", "linux", "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%"},
		{"1.25", "windows", "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%"},
		{"1.29", "linux", "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%"},
		{"1.30", "linux", "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%,imagefs.inodesFree<5%"},
		{"1.30", "windows", "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%"},
		{"1.31", "windows", "memory.available<500Mi,nodefs.available<10%,imagefs.available<15%"},
		{"1.37", "darwin", "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%"},
	}
	for _, tc := range tests {
		m := DefaultEvictionHard(mustVersion(tc.v), tc.goos)
		var parts []string
		for _, k := range sortedKeys(m) {
			parts = append(parts, k+"<"+m[k])
		}
		if got := strings.Join(parts, ","); got != tc.want {
			t.Errorf("%s/%s: got %s, want %s", tc.v, tc.goos, got, tc.want)
		}
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]string{"1.37": "1.37", "v1.37.2": "1.37.2", "Kubernetes v1.7.0\n": "1.7.0", "1.30.0-rc.1": "1.30.0"} {
		v, err := ParseVersion(in)
		if err != nil || v.String() != want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %s", in, v, err, want)
		}
	}
	for _, bad := range []string{"", "latest", "2.0"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q): no error", bad)
		}
	}
}

func TestSystemdExpansion(t *testing.T) {
	vars := map[string]envVar{
		"A": {val: "--x=1  --y='two words'", o: origin{file: "f", line: 3}},
		"B": {val: "b c", o: origin{file: "g", line: 1}},
	}
	got, err := expandExecStart(unitOption{value: `-/usr/bin/kubelet $A ${B} pre${B}post "$$literal" $UNSET "q w"`, o: origin{file: "u", line: 9}}, vars)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, w := range got {
		s = append(s, w.s+"@"+w.o.String())
	}
	want := []string{"/usr/bin/kubelet@u:9", "--x=1@f:3 via $A", "--y=two words@f:3 via $A", "b c@g:1 via $B", "preb cpost@g:1 via $B", "$literal@u:9", "q w@u:9"}
	if strings.Join(s, "|") != strings.Join(want, "|") {
		t.Errorf("got  %q\nwant %q", s, want)
	}
}

func TestParseEnvFile(t *testing.T) {
	in := "# comment\n; other\nA=plain value  \nexport B=\"quoted \\\"x\\\" $y\"\nC='single $q'\nD=multi\\\n line\nE=\"two\nlines\"\nnoequals\n"
	kvs, err := parseEnvFile(in, "/e")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, kv := range kvs {
		got = append(got, kv.key+"="+kv.v.val+"@"+kv.v.o.pos())
	}
	want := []string{"A=plain value@/e:3", `B=quoted "x" $y@/e:4`, "C=single $q@/e:5", "D=multi line@/e:6", "E=two\nlines@/e:8"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if _, err := parseEnvFile("A=\"open\n", "/e"); err == nil || err.Error() != `/e:1: unterminated " quote in value of A` {
		t.Errorf("unterminated: %v", err)
	}
}

func TestSplitCommandLine(t *testing.T) {
	got, err := SplitCommandLine(`--a=b  --c 'd e' "--f=g h" i\ j`)
	if err != nil || strings.Join(got, "|") != "--a=b|--c|d e|--f=g h|i j" {
		t.Errorf("got %q, %v", got, err)
	}
	if _, err := SplitCommandLine(`--a="b`); err == nil {
		t.Error("unterminated quote: no error")
	}
}
