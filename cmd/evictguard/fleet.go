package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/rest"

	"github.com/evictguard/evictguard/internal/kube"
	"github.com/evictguard/evictguard/internal/units"
	"github.com/evictguard/evictguard/monitor/feed"
)

type fleetOptions struct {
	kubeconfig, selector, sort string
}

func newFleetCommand(g *globalOptions) *cobra.Command {
	o := &fleetOptions{}
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "List the nodes by headroom and time to their eviction thresholds, from what the daemons publish on the API server",
		Long: `List every node (or those matching --selector) with what the evictguard daemon on it
published: the EvictionPredicted condition, and the evictguard.dev/headroom annotation with the
node's nearest signal, its headroom and predicted time to its threshold. One List request; the
identity needs only "list nodes". Nodes without evictguard data are listed as such.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.sort != "headroom" && o.sort != "time" {
				return usageErr(fmt.Errorf("--sort must be headroom or time, not %q", o.sort))
			}
			rows, err := listFleet(cmd.Context(), o)
			if err != nil {
				return err
			}
			sortFleet(rows, o.sort)
			if g.output == "json" {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			return writeFleetTable(g.stdout, rows)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig for the API server (default $KUBECONFIG, else ~/.kube/config, else in-cluster)")
	f.StringVarP(&o.selector, "selector", "l", "", "label selector of the nodes to list, e.g. node-role.kubernetes.io/worker")
	f.StringVar(&o.sort, "sort", "time", "order: time (soonest predicted threshold first) or headroom (least headroom first)")
	return cmd
}

// fleetNode is one node as `fleet` shows it.
type fleetNode struct {
	Name string `json:"name"`
	// Evictguard is false when the node has neither the condition nor the annotation.
	Evictguard bool `json:"evictguard"`
	// Condition is the EvictionPredicted condition's status and reason.
	Condition string `json:"condition,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// LastHeartbeat is the condition's lastHeartbeatTime: when the daemon last wrote it and
	// the annotation.
	LastHeartbeat *time.Time `json:"lastHeartbeat,omitempty"`
	HeartbeatAge  string     `json:"heartbeatAge,omitempty"`
	// Nearest is the annotation: the nearest signal with its headroom and prediction.
	Nearest *feed.Headroom `json:"nearest,omitempty"`
	// Error says why the annotation could not be read.
	Error string `json:"error,omitempty"`
}

func fleetRow(n *corev1.Node, now time.Time) fleetNode {
	r := fleetNode{Name: n.Name}
	for _, c := range n.Status.Conditions {
		if c.Type != feed.ConditionType {
			continue
		}
		r.Evictguard = true
		r.Condition, r.Reason = string(c.Status), c.Reason
		if !c.LastHeartbeatTime.IsZero() {
			hb := c.LastHeartbeatTime.UTC()
			r.LastHeartbeat = &hb
			r.HeartbeatAge = now.Sub(hb).Round(time.Second).String()
		}
	}
	if v, ok := n.Annotations[feed.AnnotationHeadroom]; ok {
		r.Evictguard = true
		h, err := feed.ParseHeadroom(v)
		if err != nil {
			r.Error = err.Error()
		} else {
			r.Nearest = &h
		}
	}
	return r
}

// fleetScheme decodes Node lists only; the typed clientset would register every API group
// (see internal/kube).
var fleetCodecs = func() serializer.CodecFactory {
	s := runtime.NewScheme()
	utilruntime.Must(corev1.AddToScheme(s))
	metav1.AddToGroupVersion(s, corev1.SchemeGroupVersion)
	return serializer.NewCodecFactory(s)
}()

// defaultKubeconfig is kubectl's: $KUBECONFIG (its first file), else ~/.kube/config when it
// exists, else "" (in-cluster).
func defaultKubeconfig() string {
	if v := os.Getenv("KUBECONFIG"); v != "" {
		return filepath.SplitList(v)[0]
	}
	if home, err := os.UserHomeDir(); err == nil {
		if p := filepath.Join(home, ".kube", "config"); fileExists(p) {
			return p
		}
	}
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// listFleet lists the Nodes with one request.
func listFleet(ctx context.Context, o *fleetOptions) ([]fleetNode, error) {
	path := o.kubeconfig
	if path == "" {
		path = defaultKubeconfig()
	}
	cfg, err := kube.Config(path, 0, 0)
	if err != nil {
		return nil, usageErr(fmt.Errorf("--kubeconfig: %w", err))
	}
	c := *cfg
	c.APIPath = "/api"
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.NegotiatedSerializer = fleetCodecs.WithoutConversion()
	rc, err := rest.RESTClientFor(&c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	list := &corev1.NodeList{}
	req := rc.Get().Resource("nodes")
	if o.selector != "" {
		req = req.Param("labelSelector", o.selector)
	}
	if err := req.Do(ctx).Into(list); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	now := time.Now()
	rows := make([]fleetNode, 0, len(list.Items))
	for i := range list.Items {
		rows = append(rows, fleetRow(&list.Items[i], now))
	}
	return rows, nil
}

// sortFleet orders the nodes: by time, breached first, then the soonest prediction, then
// the nodes without one by headroom; by headroom, the least headroom (percent of capacity)
// first. Nodes without evictguard data come last, then by name.
func sortFleet(rows []fleetNode, by string) {
	type key struct {
		group   int
		seconds int64
		percent float64
	}
	k := func(r fleetNode) key {
		h := r.Nearest
		if h == nil {
			return key{group: 9}
		}
		pct := 1e9
		if h.Percent != nil {
			pct = *h.Percent
		}
		if by == "headroom" {
			return key{percent: pct}
		}
		switch {
		case h.State == "breached":
			return key{group: 0, percent: pct}
		case h.Seconds != nil:
			return key{group: 1, seconds: *h.Seconds, percent: pct}
		default:
			return key{group: 2, percent: pct}
		}
	}
	sort.SliceStable(rows, func(i, j int) bool {
		a, b := k(rows[i]), k(rows[j])
		if a.group != b.group {
			return a.group < b.group
		}
		if a.seconds != b.seconds {
			return a.seconds < b.seconds
		}
		if a.percent != b.percent {
			return a.percent < b.percent
		}
		return rows[i].Name < rows[j].Name
	})
}

// headroomString is "1.5 GiB (4.2%)" for bytes and "12000 inodes (3.1%)" otherwise; the
// percentage as published (two decimals at most).
func headroomString(h *feed.Headroom) string {
	s := fmt.Sprintf("%d %s", h.Headroom, h.Unit)
	if h.Unit == "bytes" {
		s = units.Bytes(h.Headroom)
	}
	if h.Percent != nil {
		s += " (" + strconv.FormatFloat(*h.Percent, 'f', -1, 64) + "%)"
	}
	return s
}

func timeString(h *feed.Headroom) string {
	switch {
	case h.State == "breached":
		return "past threshold"
	case h.Seconds == nil:
		return "-" // not being consumed
	default:
		return (time.Duration(*h.Seconds) * time.Second).String()
	}
}

func writeFleetTable(w io.Writer, rows []fleetNode) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tCONDITION\tSIGNAL\tSTATE\tHEADROOM\tTIME TO THRESHOLD\tHEARTBEAT")
	for _, r := range rows {
		cond := "-"
		if r.Condition != "" {
			cond = r.Condition + " " + r.Reason
		}
		hb := "-"
		if r.HeartbeatAge != "" {
			hb = r.HeartbeatAge + " ago"
		}
		switch {
		case !r.Evictguard:
			fmt.Fprintf(tw, "%s\t-\t(no evictguard data)\t\t\t\t-\n", r.Name)
		case r.Nearest == nil:
			note := "(no headroom annotation)"
			if r.Error != "" {
				note = "(unreadable annotation)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t\t\t\t%s\n", r.Name, cond, note, hb)
		default:
			h := r.Nearest
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, cond, h.Signal+" ("+h.Kind+")", h.State, headroomString(h), timeString(h), hb)
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}
