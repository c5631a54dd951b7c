package feed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/evictguard/evictguard/internal/kube"
	"github.com/evictguard/evictguard/monitor"
)

// ConditionType is evictguard's Node condition. It is deliberately not DiskPressure, which
// belongs to the kubelet and drives scheduling and taints.
const ConditionType corev1.NodeConditionType = "EvictionPredicted"

// Event and condition reasons. The Remediation* reasons are for the remediation engine
// (NodeReporter.Event).
const (
	ReasonEvictionImminent             = "EvictionImminent"
	ReasonEvictionThresholdBreached    = "EvictionThresholdBreached"
	ReasonEvictionNoLongerImminent     = "EvictionNoLongerImminent"
	ReasonEvictionThresholdsDiscovered = "EvictionThresholdsDiscovered"
	ReasonEvictionThresholdsMismatch   = "EvictionThresholdsMismatch"
	ReasonNoEvictionPredicted          = "NoEvictionPredicted"

	ReasonRemediationPlanned    = "RemediationPlanned"
	ReasonRemediationStarted    = "RemediationStarted"
	ReasonRemediationSucceeded  = "RemediationSucceeded"
	ReasonRemediationFailed     = "RemediationFailed"
	ReasonRemediationRolledBack = "RemediationRolledBack"
	ReasonRemediationBlocked    = "RemediationBlocked"
)

// Component is the Event source and reporting controller.
const Component = "evictguard"

// EventNamespace is where Node Events go, as the kubelet does (cluster-scoped object).
const EventNamespace = metav1.NamespaceDefault

// NodeConfig configures a NodeReporter.
type NodeConfig struct {
	Client kube.Interface
	Node   string
	Policy Policy
	// EventInterval is the least time between two updates of the same Event (default 5m);
	// an Event is identified by node, reason and key, so repeats (also across daemon
	// restarts) update its count instead of creating new ones.
	EventInterval time.Duration
	// Heartbeat re-patches an unchanged condition this often (default 5m).
	Heartbeat time.Duration
	// QPS and Burst bound the API writes of this reporter (defaults 1 and 10).
	QPS   float64
	Burst int
	// Mismatches returns the /configz differences (nil for none).
	Mismatches func() []string
	Logger     *slog.Logger
	Now        func() time.Time
}

// NodeReporter keeps Events and the EvictionPredicted condition of one Node up to date.
type NodeReporter struct {
	cfg     NodeConfig
	tracker *Tracker
	log     *slog.Logger
	now     func() time.Time
	limit   *rate.Limiter

	mu     sync.Mutex
	latest *monitor.Snapshot
	wake   chan struct{}

	evMu    sync.Mutex
	evSent  map[string]time.Time // event name → last create/update by us
	uid     types.UID
	cond    *corev1.NodeCondition // last condition written
	condAt  time.Time
	firing  map[string]Alert
	started bool
	kept    bool // a True condition found on the Node is kept while warming up

	// After a failed sync the next one waits a jittered, growing delay (retryBackoff):
	// when an API server comes back, a fleet's daemons retry spread over a minute or two
	// instead of all at their next sample (docs/architecture.md).
	backoff *wait.Backoff
	retryAt time.Time
}

// retryBackoff is the delay before retrying a failed sync: 2 s, doubling to at most a
// minute, each drawn from [d, 2d).
func retryBackoff() *wait.Backoff {
	return &wait.Backoff{Duration: 2 * time.Second, Factor: 2, Jitter: 1, Steps: math.MaxInt32, Cap: time.Minute}
}

// due reports whether a sync may run now (not backing off after a failure).
func (r *NodeReporter) due(now time.Time) bool { return !now.Before(r.retryAt) }

// synced records a sync's outcome: a failure sets the next retry time, a success resets.
func (r *NodeReporter) synced(now time.Time, err error) time.Duration {
	if err == nil {
		r.backoff, r.retryAt = nil, time.Time{}
		return 0
	}
	if r.backoff == nil {
		r.backoff = retryBackoff()
	}
	d := r.backoff.Step()
	r.retryAt = now.Add(d)
	return d
}

// NewNodeReporter returns a reporter; call Run in a goroutine.
func NewNodeReporter(cfg NodeConfig) (*NodeReporter, error) {
	if cfg.Client == nil || cfg.Node == "" {
		return nil, errors.New("node reporter: a client and a node name are needed")
	}
	if cfg.EventInterval <= 0 {
		cfg.EventInterval = 5 * time.Minute
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 5 * time.Minute
	}
	if cfg.QPS <= 0 {
		cfg.QPS = 1
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 10
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &NodeReporter{
		cfg: cfg, tracker: NewTracker(cfg.Policy, cfg.Node), log: cfg.Logger.With("feed", "node", "node", cfg.Node),
		now: cfg.Now, limit: rate.NewLimiter(rate.Limit(cfg.QPS), cfg.Burst),
		wake: make(chan struct{}, 1), evSent: map[string]time.Time{}, firing: map[string]Alert{},
	}, nil
}

// SetPolicy replaces the policy of EvictionPredicted Events and the condition (a config
// reload); what is already reported is kept and re-judged by the new horizons.
func (r *NodeReporter) SetPolicy(p Policy) { r.tracker.SetPolicy(p) }

// Notify hands over the latest snapshot without blocking.
func (r *NodeReporter) Notify(s *monitor.Snapshot) {
	r.mu.Lock()
	r.latest = s
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run processes snapshots until ctx is done. API errors are logged and retried with the
// first snapshot (or heartbeat) after a jittered backoff; they never reach the monitor loop.
func (r *NodeReporter) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-t.C:
		}
		r.mu.Lock()
		snap := r.latest
		r.mu.Unlock()
		if snap == nil || !r.due(r.now()) {
			continue
		}
		err := r.sync(ctx, snap)
		if ctx.Err() != nil {
			return
		}
		if d := r.synced(r.now(), err); err != nil {
			r.log.Warn("updating the node failed; will retry", "err", err, "after", d.Round(100*time.Millisecond))
		}
	}
}

// ThresholdsMessage describes the effective thresholds for the EvictionThresholdsDiscovered
// Event, e.g. "hard: nodefs.available<10%, nodefs.inodesFree<5%; soft: none".
func ThresholdsMessage(snap *monitor.Snapshot) string {
	byKind := map[string][]string{}
	for _, s := range snap.Signals {
		byKind[s.Kind] = append(byKind[s.Kind], s.Signal+"<"+s.Threshold)
	}
	var parts []string
	for _, k := range []string{"hard", "soft"} {
		v := byKind[k]
		sort.Strings(v)
		if len(v) == 0 {
			v = []string{"none"}
		}
		parts = append(parts, k+": "+strings.Join(v, ", "))
	}
	var fs []string
	for _, f := range snap.Filesystems {
		if f.Role != monitor.RoleLogs {
			fs = append(fs, fmt.Sprintf("%s=%s (%s)", f.Role, f.Path, f.Mountpoint))
		}
	}
	return fmt.Sprintf("evictguard watches the kubelet's effective eviction thresholds (%s) on %s", strings.Join(parts, "; "), strings.Join(fs, ", "))
}

func (r *NodeReporter) sync(ctx context.Context, snap *monitor.Snapshot) error {
	now := r.now()
	var mism []string
	if r.cfg.Mismatches != nil {
		mism = r.cfg.Mismatches()
	}
	var errs []error
	if r.uid == "" {
		node, err := r.cfg.Client.GetNode(ctx, r.cfg.Node)
		if err != nil {
			return fmt.Errorf("get node %s: %w", r.cfg.Node, err)
		}
		r.uid = node.UID
	}
	if !r.started {
		if err := r.Event(ctx, corev1.EventTypeNormal, ReasonEvictionThresholdsDiscovered, "", ThresholdsMessage(snap)); err != nil {
			errs = append(errs, err)
		} else {
			r.started = true
		}
		if len(mism) > 0 {
			if err := r.Event(ctx, corev1.EventTypeWarning, ReasonEvictionThresholdsMismatch, "",
				"the kubelet's /configz differs from its flags and files: "+strings.Join(mism, "; ")); err != nil {
				errs = append(errs, err)
			}
		}
	}
	firing := map[string]Alert{}
	for _, a := range r.tracker.Update(now, snap, nil) {
		if a.Severity == SeverityCritical && a.Name == AlertEvictionImminent {
			continue // one Event series per signal; the message carries the time
		}
		firing[a.Signal+"/"+a.Kind] = a
	}
	for k, a := range firing {
		reason := ReasonEvictionImminent
		if a.Name == AlertEvictionThresholdBreached {
			reason = ReasonEvictionThresholdBreached
		}
		if err := r.Event(ctx, corev1.EventTypeWarning, reason, k, a.Description); err != nil {
			errs = append(errs, err)
		}
	}
	for k, a := range r.firing {
		if _, still := firing[k]; !still {
			msg := fmt.Sprintf("%s (%s) on %s is no longer predicted to reach its eviction threshold within %s", a.Signal, a.Kind, r.cfg.Node, r.tracker.Policy().WarningHorizon)
			if err := r.Event(ctx, corev1.EventTypeNormal, ReasonEvictionNoLongerImminent, k, msg); err != nil {
				errs = append(errs, err)
			}
		}
	}
	r.firing = firing
	if err := r.setCondition(ctx, now, firing, warming(snap) || r.tracker.Pending(), snap); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// condition computes the EvictionPredicted condition from the firing alerts: True with the
// soonest signal first in the message, or False.
func (r *NodeReporter) condition(firing map[string]Alert, now time.Time) corev1.NodeCondition {
	c := corev1.NodeCondition{Type: ConditionType, Status: corev1.ConditionFalse, Reason: ReasonNoEvictionPredicted,
		Message: fmt.Sprintf("evictguard predicts no eviction threshold within %s", r.tracker.Policy().WarningHorizon)}
	if len(firing) == 0 {
		return c
	}
	all := make([]Alert, 0, len(firing))
	for _, a := range firing {
		all = append(all, a)
	}
	sort.Slice(all, func(i, j int) bool {
		bi, bj := all[i].Name == AlertEvictionThresholdBreached, all[j].Name == AlertEvictionThresholdBreached
		if bi != bj {
			return bi
		}
		if all[i].Seconds != all[j].Seconds {
			return all[i].Seconds < all[j].Seconds
		}
		return all[i].Key() < all[j].Key()
	})
	var parts []string
	for _, a := range all {
		if a.Name == AlertEvictionThresholdBreached {
			parts = append(parts, fmt.Sprintf("%s (%s) is past its eviction threshold", a.Signal, a.Kind))
			continue
		}
		d := (time.Duration(a.Seconds) * time.Second).Round(time.Second)
		parts = append(parts, fmt.Sprintf("%s (%s) reaches its eviction threshold in %s, at %s", a.Signal, a.Kind, d, now.Add(d).UTC().Format(time.RFC3339)))
	}
	c.Status = corev1.ConditionTrue
	c.Reason = ReasonEvictionImminent
	if all[0].Name == AlertEvictionThresholdBreached {
		c.Reason = ReasonEvictionThresholdBreached
	}
	c.Message = strings.Join(parts, "; ")
	return c
}

// warming reports whether some signal's fill rate is not known yet: the daemon has just
// started and its predictor has too few samples to say when a threshold is reached.
func warming(snap *monitor.Snapshot) bool {
	for _, s := range snap.Signals {
		if s.FillRate == nil && s.Error == "" && s.State != monitor.StateBreached {
			return true
		}
	}
	return false
}

// setCondition patches the condition when its status, reason or message class changes, and
// as a heartbeat; the message of a True condition (its predicted time) is refreshed at most
// every EventInterval/5 to keep writes low.
//
// A True condition found on the Node is not cleared by a daemon that has not written one yet
// while its own verdict is not settled — fill rates still warming up, or predictions waiting
// out `for:`: after an upgrade or a restart the new process has to learn (or reload) the fill
// the old one predicted and hold it for `for:` again, and a False meanwhile would be a false
// all-clear (and a flap for whatever watches it).
//
// The patch also carries the AnnotationHeadroom of snap: the API server's nodes/status
// update keeps the metadata it is sent, so the annotation rides on the condition's writes.
func (r *NodeReporter) setCondition(ctx context.Context, now time.Time, firing map[string]Alert, warmingUp bool, snap *monitor.Snapshot) error {
	want := r.condition(firing, now)
	if r.cond == nil && warmingUp && want.Status == corev1.ConditionFalse {
		node, err := r.cfg.Client.GetNode(ctx, r.cfg.Node)
		if err != nil {
			return fmt.Errorf("get node %s: %w", r.cfg.Node, err)
		}
		for _, c := range node.Status.Conditions {
			if c.Type == ConditionType && c.Status == corev1.ConditionTrue {
				if !r.kept {
					r.log.Info("keeping the node condition found until this daemon's predictions settle", "type", ConditionType, "reason", c.Reason, "message", c.Message)
					r.kept = true
				}
				return nil
			}
		}
	}
	if prev := r.cond; prev != nil && prev.Status == want.Status && prev.Reason == want.Reason {
		refresh := r.cfg.Heartbeat
		if want.Status == corev1.ConditionTrue {
			refresh = min(refresh, r.cfg.EventInterval/5)
		}
		if now.Sub(r.condAt) < refresh {
			return nil
		}
	}
	want.LastHeartbeatTime = metav1.NewTime(now)
	want.LastTransitionTime = metav1.NewTime(now)
	switch {
	case r.cond == nil:
		// The first write of this process reads the Node once: its UID (for Events) and the
		// transition time of a condition a previous process left with the same status. After
		// that this process owns the condition and keeps the time itself, so a heartbeat is
		// one request, not two (the fleet's API budget, docs/architecture.md).
		node, err := r.cfg.Client.GetNode(ctx, r.cfg.Node)
		if err != nil {
			return fmt.Errorf("get node %s: %w", r.cfg.Node, err)
		}
		r.uid = node.UID
		for _, c := range node.Status.Conditions {
			if c.Type == ConditionType && c.Status == want.Status {
				want.LastTransitionTime = c.LastTransitionTime
			}
		}
	case r.cond.Status == want.Status:
		want.LastTransitionTime = r.cond.LastTransitionTime
	}
	if err := r.limit.Wait(ctx); err != nil {
		return err
	}
	body := map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{want}}}
	if h, ok := NearestSignal(snap); ok {
		body["metadata"] = map[string]any{"annotations": map[string]string{AnnotationHeadroom: h.String()}}
	}
	patch, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode condition patch: %w", err)
	}
	if _, err := r.cfg.Client.PatchNodeStatus(ctx, r.cfg.Node, types.StrategicMergePatchType, patch); err != nil {
		return fmt.Errorf("patch node %s condition %s: %w", r.cfg.Node, ConditionType, err)
	}
	if r.cond == nil || r.cond.Status != want.Status {
		r.log.Info("node condition set", "type", ConditionType, "status", want.Status, "reason", want.Reason, "message", want.Message)
	}
	r.cond, r.condAt = &want, now
	return nil
}

// EventName is the deterministic name of the Event for (node, reason, key): repeats of the
// same Event, also from a restarted daemon, find and update it instead of creating another.
func EventName(node, reason, key string) string {
	h := sha256.Sum256([]byte(reason + "\x00" + key))
	suffix := ".evictguard." + hex.EncodeToString(h[:8])
	if max := 253 - len(suffix); len(node) > max {
		node = node[:max]
	}
	return node + suffix
}

// Event records an Event on the Node: created the first time, then (count+1, message,
// lastTimestamp) updated at most every EventInterval. key distinguishes Events of the same
// reason (a signal, an action); "" for reasons that occur once, in which case the message is
// the key: the same message is never repeated while its Event exists.
func (r *NodeReporter) Event(ctx context.Context, eventType, reason, key, message string) error {
	r.evMu.Lock()
	defer r.evMu.Unlock()
	now := r.now()
	interval := r.cfg.EventInterval
	if key == "" {
		key, interval = "msg:"+message, 24*time.Hour
	}
	name := EventName(r.cfg.Node, reason, key)
	if last, ok := r.evSent[name]; ok && now.Sub(last) < interval {
		return nil
	}
	existing, err := r.cfg.Client.GetEvent(ctx, EventNamespace, name)
	switch {
	case apierrors.IsNotFound(err):
		if err := r.limit.Wait(ctx); err != nil {
			return err
		}
		uid := r.uid
		if uid == "" {
			uid = types.UID(r.cfg.Node) // the kubelet's convention for Node references
		}
		ev := &corev1.Event{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: EventNamespace},
			InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: r.cfg.Node, UID: uid,
				APIVersion: "v1"},
			Reason: reason, Message: truncate(message, 1024), Type: eventType,
			Source:         corev1.EventSource{Component: Component, Host: r.cfg.Node},
			FirstTimestamp: metav1.NewTime(now), LastTimestamp: metav1.NewTime(now), Count: 1,
			ReportingController: Component, ReportingInstance: r.cfg.Node,
		}
		if _, err := r.cfg.Client.CreateEvent(ctx, ev); err != nil {
			return fmt.Errorf("create event %s %s: %w", reason, name, err)
		}
		r.log.Info("event", "reason", reason, "type", eventType, "message", message)
	case err != nil:
		return fmt.Errorf("get event %s: %w", name, err)
	default:
		if now.Sub(existing.LastTimestamp.Time) < interval {
			break // recent enough (e.g. from before a restart): do not repeat
		}
		if err := r.limit.Wait(ctx); err != nil {
			return err
		}
		patch, err := json.Marshal(map[string]any{
			"count": existing.Count + 1, "message": truncate(message, 1024), "lastTimestamp": metav1.NewTime(now),
		})
		if err != nil {
			return fmt.Errorf("encode event patch: %w", err)
		}
		if _, err := r.cfg.Client.PatchEvent(ctx, EventNamespace, name, types.MergePatchType, patch); err != nil {
			return fmt.Errorf("update event %s %s: %w", reason, name, err)
		}
		r.log.Info("event repeated", "reason", reason, "type", eventType, "count", existing.Count+1, "message", message)
	}
	r.evSent[name] = now
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
