package remediate

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/evictguard/evictguard/internal/kube"
)

// AlertBlocker asks Alertmanager's v2 API for active, unsilenced, uninhibited alerts matching
// every matcher. It fails closed: any error is returned and callers must treat it as a block.
// It returns a reason when an alert matches ("" when none does).
func AlertBlocker(ctx context.Context, hc *http.Client, base string, matchers []string) (string, error) {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	q := url.Values{"active": {"true"}, "silenced": {"false"}, "inhibited": {"false"}}
	for _, m := range matchers {
		q.Add("filter", m)
	}
	u := strings.TrimRight(base, "/") + "/api/v2/alerts?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("alertmanager %s: %w", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return "", fmt.Errorf("alertmanager %s: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("alertmanager %s: %s: %s", base, resp.Status, strings.TrimSpace(string(body)))
	}
	var alerts []struct {
		Labels map[string]string `json:"labels"`
		Status struct {
			State string `json:"state"`
		} `json:"status"`
	}
	if err := json.Unmarshal(body, &alerts); err != nil {
		return "", fmt.Errorf("alertmanager %s: decode alerts: %w", base, err)
	}
	var names []string
	for _, a := range alerts {
		if a.Status.State != "" && a.Status.State != "active" {
			continue
		}
		names = append(names, a.Labels["alertname"])
	}
	if len(names) == 0 {
		return "", nil
	}
	return fmt.Sprintf("%d firing alert(s) match %v in %s: %s", len(names), matchers, base, strings.Join(names, ", ")), nil
}

// PodBlocker lists the pods on node matching selector. Errors must be treated as a block.
func PodBlocker(ctx context.Context, c kube.Interface, node, selector string) (string, error) {
	pods, err := c.ListPods(ctx, "", metav1.ListOptions{
		LabelSelector: selector,
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String(),
	})
	if err != nil {
		return "", fmt.Errorf("list pods on %s: %w", node, err)
	}
	var names []string
	for _, p := range pods.Items {
		if p.Status.Phase == "Succeeded" || p.Status.Phase == "Failed" {
			continue
		}
		names = append(names, p.Namespace+"/"+p.Name)
	}
	if len(names) == 0 {
		return "", nil
	}
	return fmt.Sprintf("pod(s) on %s match %q: %s", node, selector, strings.Join(names, ", ")), nil
}
