package kubeletcfg

import (
	"strings"
	"testing"
)

// FuzzParseThresholdStatement checks that no input panics and that what is accepted is
// consistent: a disabled signal is only "0%"/"100%", percentages are within [0,1], quantities
// positive, and the 1.7 grammar never accepts what it must refuse.
func FuzzParseThresholdStatement(f *testing.F) {
	for _, s := range []string{"nodefs.available<10%", "memory.available<100Mi", "nodefs.available<0%", "imagefs.inodesFree<100%",
		"pid.available<1e3", "nodefs.available<0", "nodefs.available<-1%", "nodefs.available<1e400%", "x<1", "nodefs.available<NaN%",
		"memory.available<0.5Gi", "nodefs.available<10%%"} {
		f.Add(s, uint8(37))
		f.Add(s, uint8(7))
	}
	f.Fuzz(func(t *testing.T, stmt string, minor uint8) {
		v := Version{Major: 1, Minor: int(minor % 40), Patch: -1}
		sig, val, ok := strings.Cut(stmt, "<")
		if !ok {
			return
		}
		th, err := parseThresholdStatement(v, sig, val)
		if err != nil {
			return
		}
		if th == nil {
			if legacyGrammar(v) || (val != "0%" && val != "100%") {
				t.Fatalf("%s<%s disabled on %s", sig, val, v)
			}
			return
		}
		if !ValidSignal(v, th.Signal) {
			t.Fatalf("accepted invalid signal %q", th.Signal)
		}
		if th.Value.Quantity != nil {
			if th.Value.Quantity.Sign() <= 0 {
				t.Fatalf("accepted non-positive quantity %q", val)
			}
			return
		}
		p := th.Value.Percentage
		if p != p {
			return // NaN passes the kubelet's checks too (NaN < 0 and NaN > 1 are false)
		}
		// 1.7 only required p > 0: "150%" and even "Inf%" were accepted.
		if (legacyGrammar(v) && p <= 0) || (!legacyGrammar(v) && (p < 0 || p > 1)) {
			t.Fatalf("accepted percentage %v from %q on %s", p, val, v)
		}
		// Round trip through the legacy string grammar.
		if legacyGrammar(v) {
			m, err := ParseLegacyThresholds(sig + "<" + val)
			if err != nil && !strings.Contains(sig+val, ",") {
				t.Fatalf("legacy grammar rejects accepted %s<%s: %v", sig, val, err)
			}
			_ = m
		}
	})
}

// FuzzParseEvictionFlags feeds arbitrary --eviction-* values through the kubelet's flag types
// and the resolver's flag parsing; it must never panic.
func FuzzParseEvictionFlags(f *testing.F) {
	f.Add("--eviction-hard=nodefs.available<5%,memory.available<1Gi", "--eviction-soft-grace-period=nodefs.available=1m")
	f.Add("--eviction_hard", "nodefs.available<5%")
	f.Add("--eviction-minimum-reclaim=a=b=c", "--")
	f.Fuzz(func(t *testing.T, a, b string) {
		for _, v := range []Version{mustVersion("1.7"), mustVersion("1.37")} {
			kf, err := parseKubeletFlags(v, wordsOf([]string{a, b}, origin{file: "fuzz"}))
			if err != nil {
				continue
			}
			if legacyGrammar(v) {
				if kf.legacyMaps() != nil {
					continue
				}
			}
			_, _ = parseThresholds(v, evictionMaps{hard: kf.hard, soft: kf.soft, grace: kf.grace, reclaim: kf.reclaim}, true)
		}
	})
}
