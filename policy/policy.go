package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/evictguard/evictguard/kubeletcfg"
)

// Policy says when and how far evictguard may change the kubelet's eviction thresholds. The
// zero value (after ApplyDefaults) is a dry run that changes nothing. It is meant to be
// embedded in the daemon's config file; decode strictly, then ApplyDefaults, then Validate.
type Policy struct {
	// DryRun (default true) plans and reports but never writes or restarts.
	DryRun *bool `json:"dryRun,omitempty" yaml:"dryRun,omitempty"`
	// Signals are the hard thresholds evictguard may lower (default nodefs.available,
	// imagefs.available, nodefs.inodesFree, imagefs.inodesFree). memory.available and
	// pid.available need AllowMemoryAndPID.
	Signals           []string `json:"signals,omitempty" yaml:"signals,omitempty"`
	AllowMemoryAndPID bool     `json:"allowMemoryAndPID,omitempty" yaml:"allowMemoryAndPID,omitempty"`
	// Headroom to keep between what is available now and the new threshold: a threshold is
	// lowered only when the current headroom is smaller, and then to at most
	// available − headroom (whole percent, rounded down).
	Headroom Amount `json:"headroom" yaml:"headroom"`
	// Floor: no threshold is ever set below it (the larger of percent and bytes).
	Floor Amount `json:"floor" yaml:"floor"`
	// Windows: changes happen only inside one of them (none: any time).
	Windows []Window `json:"windows,omitempty" yaml:"windows,omitempty"`
	// Cooldown is the minimum time between two kubelet restarts by evictguard (default 1h).
	Cooldown Duration `json:"cooldown,omitempty" yaml:"cooldown,omitempty"`
	// MaxRestartsPerDay caps restarts in any 24 h (default 2).
	MaxRestartsPerDay int `json:"maxRestartsPerDay,omitempty" yaml:"maxRestartsPerDay,omitempty"`
	// MinKubeletUptime: the kubelet must have been running this long (default 10m).
	MinKubeletUptime Duration `json:"minKubeletUptime,omitempty" yaml:"minKubeletUptime,omitempty"`
	// Blockers stop a change while they match; an unreachable source blocks too.
	Blockers Blockers `json:"blockers,omitempty" yaml:"blockers,omitempty"`
	// Lock limits how many nodes restart their kubelet at once (needs an API server).
	Lock Lock `json:"lock,omitempty" yaml:"lock,omitempty"`
	// WriteMethod forces a writer (kubeletcfg.WriteMethod); "" chooses from the node's layout.
	WriteMethod string `json:"writeMethod,omitempty" yaml:"writeMethod,omitempty"`
	// VerifyTimeout bounds restart + health + verification before rolling back (default 2m).
	VerifyTimeout Duration `json:"verifyTimeout,omitempty" yaml:"verifyTimeout,omitempty"`
	// StableFor is how long the kubelet must stay healthy after the restart (default 10s).
	StableFor Duration `json:"stableFor,omitempty" yaml:"stableFor,omitempty"`
	// Migration lets the planner move the runtime's data root off nodefs (disabled unless
	// Migration.To is set); see MigrationPolicy.
	Migration MigrationPolicy `json:"migration,omitzero" yaml:"migration,omitempty"`
}

// Amount is a size as a percentage of capacity and/or bytes; the larger applies. Bytes apply
// to *.available only (inode signals use Percent).
type Amount struct {
	Percent float64 `json:"percent,omitempty" yaml:"percent,omitempty"`
	Bytes   string  `json:"bytes,omitempty" yaml:"bytes,omitempty"` // a quantity: "2Gi"
}

// Window is a maintenance window: on Days (Mon…Sun; empty: every day), from Start to End
// ("HH:MM", End may be before Start to cross midnight), in TimeZone (IANA, default UTC).
type Window struct {
	Days     []string `json:"days,omitempty" yaml:"days,omitempty"`
	Start    string   `json:"start" yaml:"start"`
	End      string   `json:"end" yaml:"end"`
	TimeZone string   `json:"timeZone,omitempty" yaml:"timeZone,omitempty"`
}

// Blockers are fail-closed conditions that stop a change.
type Blockers struct {
	// AlertmanagerURL: block while an active alert matches all of AlertMatchers
	// (Alertmanager v2 API filter syntax: name="value", name=~"regex", name!="value").
	AlertmanagerURL string   `json:"alertmanagerURL,omitempty" yaml:"alertmanagerURL,omitempty"`
	AlertMatchers   []string `json:"alertMatchers,omitempty" yaml:"alertMatchers,omitempty"`
	// PodSelector: block while a pod on this node matches this label selector.
	PodSelector string `json:"podSelector,omitempty" yaml:"podSelector,omitempty"`
}

// Lock is the cluster-wide restart concurrency limit: Slots Leases named <Name>-0…<Name>-N-1
// in Namespace; a node holds one for the duration of a restart (at most TTL).
type Lock struct {
	Namespace string   `json:"namespace,omitempty" yaml:"namespace,omitempty"`
	Name      string   `json:"name,omitempty" yaml:"name,omitempty"`
	Slots     int      `json:"slots,omitempty" yaml:"slots,omitempty"`
	TTL       Duration `json:"ttl,omitempty" yaml:"ttl,omitempty"`
}

// Duration is a time.Duration written as "90s", "1h".
type Duration struct{ time.Duration }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// Defaults.
var (
	DefaultSignals = []string{kubeletcfg.SignalNodeFsAvailable, kubeletcfg.SignalImageFsAvailable,
		kubeletcfg.SignalNodeFsInodesFree, kubeletcfg.SignalImageFsInodesFree}
)

// ApplyDefaults fills in unset fields.
func (p *Policy) ApplyDefaults() {
	if p.DryRun == nil {
		t := true
		p.DryRun = &t
	}
	if len(p.Signals) == 0 {
		p.Signals = slices.Clone(DefaultSignals)
	}
	if p.Headroom.Percent == 0 && p.Headroom.Bytes == "" {
		p.Headroom.Percent = 3
	}
	if p.Floor.Percent == 0 && p.Floor.Bytes == "" {
		p.Floor.Percent = 5
	}
	if p.Cooldown.Duration == 0 {
		p.Cooldown.Duration = time.Hour
	}
	if p.MaxRestartsPerDay == 0 {
		p.MaxRestartsPerDay = 2
	}
	if p.MinKubeletUptime.Duration == 0 {
		p.MinKubeletUptime.Duration = 10 * time.Minute
	}
	if p.Lock.Slots > 0 {
		if p.Lock.Namespace == "" {
			p.Lock.Namespace = "kube-system"
		}
		if p.Lock.Name == "" {
			p.Lock.Name = "evictguard-restart"
		}
		if p.Lock.TTL.Duration == 0 {
			p.Lock.TTL.Duration = 10 * time.Minute
		}
	}
	if p.VerifyTimeout.Duration == 0 {
		p.VerifyTimeout.Duration = 2 * time.Minute
	}
	if p.StableFor.Duration == 0 {
		p.StableFor.Duration = 10 * time.Second
	}
	p.Migration.applyDefaults()
}

// Dry reports whether the policy only plans.
func (p *Policy) Dry() bool { return p.DryRun == nil || *p.DryRun }

var weekdays = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday,
	"wed": time.Wednesday, "thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

// Validate checks every field. Each error names its field (Field is the path below the
// policy: "windows[0].start") and says what is wrong (Detail), so that a caller can place it
// in its own file without parsing text.
func (p *Policy) Validate() field.ErrorList {
	var errs field.ErrorList
	bad := func(path *field.Path, value any, format string, args ...any) {
		errs = append(errs, field.Invalid(path, value, fmt.Sprintf(format, args...)))
	}
	for i, s := range p.Signals {
		switch s {
		case kubeletcfg.SignalNodeFsAvailable, kubeletcfg.SignalImageFsAvailable, kubeletcfg.SignalNodeFsInodesFree, kubeletcfg.SignalImageFsInodesFree:
		case kubeletcfg.SignalMemoryAvailable, kubeletcfg.SignalPIDAvailable:
			if !p.AllowMemoryAndPID {
				bad(field.NewPath("signals").Index(i), s, "%s needs allowMemoryAndPID: true", s)
			}
		default:
			bad(field.NewPath("signals").Index(i), s, "%q is not a signal evictguard changes", s)
		}
	}
	for _, a := range []struct {
		name   string
		amount Amount
	}{{"headroom", p.Headroom}, {"floor", p.Floor}} {
		if a.amount.Percent < 0 || a.amount.Percent >= 100 {
			bad(field.NewPath(a.name, "percent"), a.amount.Percent, "must be in [0, 100), not %v", a.amount.Percent)
		}
		if a.amount.Bytes != "" {
			q, err := resource.ParseQuantity(a.amount.Bytes)
			if err != nil || q.Sign() < 0 {
				bad(field.NewPath(a.name, "bytes"), a.amount.Bytes, "%q is not a non-negative quantity", a.amount.Bytes)
			}
		}
	}
	if p.Floor.Percent == 0 && p.Floor.Bytes == "" {
		bad(field.NewPath("floor"), p.Floor, "must be set (a threshold of 0 disables eviction)")
	}
	for i, w := range p.Windows {
		f := field.NewPath("windows").Index(i)
		if _, err := parseClock(w.Start); err != nil {
			bad(f.Child("start"), w.Start, "%v", err)
		}
		if _, err := parseClock(w.End); err != nil {
			bad(f.Child("end"), w.End, "%v", err)
		}
		for _, d := range w.Days {
			if _, ok := weekdays[strings.ToLower(d)[:min(3, len(d))]]; !ok || len(d) < 3 {
				bad(f.Child("days"), d, "%q is not a weekday", d)
			}
		}
		if _, err := time.LoadLocation(w.TimeZone); err != nil {
			bad(f.Child("timeZone"), w.TimeZone, "%v", err)
		}
	}
	if p.Cooldown.Duration < 0 || p.MinKubeletUptime.Duration < 0 || p.VerifyTimeout.Duration < 0 || p.StableFor.Duration < 0 {
		bad(field.NewPath("durations"), nil, "must not be negative")
	}
	if p.MaxRestartsPerDay < 0 {
		bad(field.NewPath("maxRestartsPerDay"), p.MaxRestartsPerDay, "must not be negative")
	}
	if (p.Blockers.AlertmanagerURL == "") != (len(p.Blockers.AlertMatchers) == 0) {
		bad(field.NewPath("blockers"), nil, "alertmanagerURL and alertMatchers go together")
	}
	if p.Blockers.PodSelector != "" {
		if _, err := labels.Parse(p.Blockers.PodSelector); err != nil {
			bad(field.NewPath("blockers", "podSelector"), p.Blockers.PodSelector, "%v", err)
		}
	}
	if p.Lock.Slots < 0 {
		bad(field.NewPath("lock", "slots"), p.Lock.Slots, "must not be negative")
	}
	// A slot is held for at most the change plus a rollback, each bounded by verifyTimeout;
	// it is not renewed meanwhile, so a shorter TTL would let another node take it over.
	if p.Lock.Slots > 0 && p.Lock.TTL.Duration <= 2*p.VerifyTimeout.Duration {
		bad(field.NewPath("lock", "ttl"), p.Lock.TTL.String(), "%s must exceed twice verifyTimeout (%s): the slot is held through a change and its rollback", p.Lock.TTL.Duration, p.VerifyTimeout.Duration)
	}
	if p.WriteMethod != "" {
		switch kubeletcfg.WriteMethod(p.WriteMethod) {
		case kubeletcfg.MethodLegacyDropIn, kubeletcfg.MethodSystemdDropIn, kubeletcfg.MethodConfigDir, kubeletcfg.MethodConfigFile:
		default:
			bad(field.NewPath("writeMethod"), p.WriteMethod, "unknown method %q", p.WriteMethod)
		}
	}
	return append(errs, p.Migration.validate(field.NewPath("migration"))...)
}

func parseClock(s string) (time.Duration, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || (hh == 24 && mm != 0) {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	return time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute, nil
}

// InWindow reports whether t falls in one of the windows (true when there are none), and
// describes the windows for a reason string.
func (p *Policy) InWindow(t time.Time) (bool, string) {
	if len(p.Windows) == 0 {
		return true, "no maintenance windows configured"
	}
	var descs []string
	for _, w := range p.Windows {
		loc, err := time.LoadLocation(w.TimeZone)
		if err != nil {
			continue
		}
		lt := t.In(loc)
		start, _ := parseClock(w.Start)
		end, _ := parseClock(w.End)
		tod := time.Duration(lt.Hour())*time.Hour + time.Duration(lt.Minute())*time.Minute + time.Duration(lt.Second())*time.Second
		day := lt.Weekday()
		in := false
		switch {
		case start <= end:
			in = tod >= start && tod < end
		case tod >= start: // crosses midnight, evening part
			in = true
		case tod < end: // morning part belongs to the previous day's window
			in = true
			day = (day + 6) % 7
		}
		if in && dayAllowed(w.Days, day) {
			return true, fmt.Sprintf("inside window %s-%s %s %v", w.Start, w.End, loc, w.Days)
		}
		descs = append(descs, fmt.Sprintf("%s-%s %s %v (local time now %s)", w.Start, w.End, loc, w.Days, lt.Format("Mon 15:04")))
	}
	return false, "outside every maintenance window: " + strings.Join(descs, "; ")
}

func dayAllowed(days []string, d time.Weekday) bool {
	if len(days) == 0 {
		return true
	}
	for _, s := range days {
		if len(s) >= 3 && weekdays[strings.ToLower(s[:3])] == d {
			return true
		}
	}
	return false
}
