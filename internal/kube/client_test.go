package kube

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

type request struct {
	Method, Path, Query, ContentType, Body string
}

// fakeServer answers every request with status and body, and records it.
type fakeServer struct {
	mu     sync.Mutex
	got    []request
	status int
	body   string
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.got = append(f.got, request{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Content-Type"), string(b)})
	status, body := f.status, f.body
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// TestClientRequests: each call is the request the typed clientset would send (method, path,
// subresource, query, patch content type), and the answer is decoded.
func TestClientRequests(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		call func(c *Client) (any, error)
		body string // answer
		want request
		// check inspects the decoded answer.
		check func(t *testing.T, got any)
	}{
		{"get node", func(c *Client) (any, error) { return c.GetNode(ctx, "n1") },
			`{"kind":"Node","apiVersion":"v1","metadata":{"name":"n1","uid":"u1"},"spec":{"unschedulable":true}}`,
			request{Method: "GET", Path: "/api/v1/nodes/n1"},
			func(t *testing.T, got any) {
				if n := got.(*corev1.Node); n.Name != "n1" || n.UID != "u1" || !n.Spec.Unschedulable {
					t.Errorf("node = %+v", n)
				}
			}},
		{"patch node", func(c *Client) (any, error) {
			return c.PatchNode(ctx, "n1", types.StrategicMergePatchType, []byte(`{"spec":{"unschedulable":true}}`))
		}, `{"kind":"Node","apiVersion":"v1","metadata":{"name":"n1"}}`,
			request{Method: "PATCH", Path: "/api/v1/nodes/n1", ContentType: string(types.StrategicMergePatchType), Body: `{"spec":{"unschedulable":true}}`}, nil},
		{"patch node status", func(c *Client) (any, error) {
			return c.PatchNodeStatus(ctx, "n1", types.StrategicMergePatchType, []byte(`{"status":{}}`))
		}, `{"kind":"Node","apiVersion":"v1","metadata":{"name":"n1"}}`,
			request{Method: "PATCH", Path: "/api/v1/nodes/n1/status", ContentType: string(types.StrategicMergePatchType), Body: `{"status":{}}`}, nil},
		{"list pods", func(c *Client) (any, error) {
			return c.ListPods(ctx, "", metav1.ListOptions{LabelSelector: "app=x", FieldSelector: "spec.nodeName=n1"})
		}, `{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[{"metadata":{"name":"p","namespace":"ns"}}]}`,
			request{Method: "GET", Path: "/api/v1/pods", Query: "fieldSelector=spec.nodeName%3Dn1&labelSelector=app%3Dx"},
			func(t *testing.T, got any) {
				if l := got.(*corev1.PodList); len(l.Items) != 1 || l.Items[0].Namespace != "ns" {
					t.Errorf("pods = %+v", l.Items)
				}
			}},
		{"evict pod", func(c *Client) (any, error) {
			return nil, c.EvictPod(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}})
		}, `{"kind":"Status","apiVersion":"v1","status":"Success"}`,
			request{Method: "POST", Path: "/api/v1/namespaces/ns/pods/p/eviction", ContentType: "application/json",
				Body: `{"kind":"Eviction","apiVersion":"policy/v1","metadata":{"name":"p","namespace":"ns"}}`}, nil},
		{"get event", func(c *Client) (any, error) { return c.GetEvent(ctx, "default", "e") },
			`{"kind":"Event","apiVersion":"v1","metadata":{"name":"e"},"count":3}`,
			request{Method: "GET", Path: "/api/v1/namespaces/default/events/e"},
			func(t *testing.T, got any) {
				if e := got.(*corev1.Event); e.Count != 3 {
					t.Errorf("event = %+v", e)
				}
			}},
		{"create event", func(c *Client) (any, error) {
			return c.CreateEvent(ctx, &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e", Namespace: "default"}, Reason: "R"})
		}, `{"kind":"Event","apiVersion":"v1","metadata":{"name":"e"}}`,
			request{Method: "POST", Path: "/api/v1/namespaces/default/events", ContentType: "application/json"}, nil},
		{"patch event", func(c *Client) (any, error) {
			return c.PatchEvent(ctx, "default", "e", types.MergePatchType, []byte(`{"count":2}`))
		}, `{"kind":"Event","apiVersion":"v1","metadata":{"name":"e"}}`,
			request{Method: "PATCH", Path: "/api/v1/namespaces/default/events/e", ContentType: string(types.MergePatchType), Body: `{"count":2}`}, nil},
		{"get lease", func(c *Client) (any, error) { return c.GetLease(ctx, "kube-system", "l") },
			`{"kind":"Lease","apiVersion":"coordination.k8s.io/v1","metadata":{"name":"l","resourceVersion":"7"},"spec":{"holderIdentity":"n1"}}`,
			request{Method: "GET", Path: "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l"},
			func(t *testing.T, got any) {
				if l := got.(*coordinationv1.Lease); l.ResourceVersion != "7" || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != "n1" {
					t.Errorf("lease = %+v", l)
				}
			}},
		{"create lease", func(c *Client) (any, error) {
			return c.CreateLease(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "l", Namespace: "kube-system"}})
		}, `{"kind":"Lease","apiVersion":"coordination.k8s.io/v1","metadata":{"name":"l"}}`,
			request{Method: "POST", Path: "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", ContentType: "application/json"}, nil},
		{"update lease", func(c *Client) (any, error) {
			return c.UpdateLease(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "l", Namespace: "kube-system", ResourceVersion: "7"}})
		}, `{"kind":"Lease","apiVersion":"coordination.k8s.io/v1","metadata":{"name":"l"}}`,
			request{Method: "PUT", Path: "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l", ContentType: "application/json"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeServer{status: http.StatusOK, body: tc.body}
			srv := httptest.NewServer(f)
			defer srv.Close()
			c, err := NewClient(&rest.Config{Host: srv.URL, QPS: 100, Burst: 100})
			if err != nil {
				t.Fatal(err)
			}
			got, err := tc.call(c)
			if err != nil {
				t.Fatal(err)
			}
			if len(f.got) != 1 {
				t.Fatalf("%d requests, want 1", len(f.got))
			}
			r := f.got[0]
			want := tc.want
			if want.Body == "" {
				r.Body = "" // not checked
			} else {
				r.Body, want.Body = compactJSON(t, r.Body), compactJSON(t, want.Body)
			}
			if r != want {
				t.Errorf("request\n got %+v\nwant %+v", r, want)
			}
			if tc.check != nil {
				tc.check(t, got)
			}
		})
	}
}

// compactJSON re-encodes a JSON object with sorted keys and no spaces.
func compactJSON(t *testing.T, s string) string {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestClientErrors: API errors come back as client-go's StatusError, so the callers' checks
// (NotFound, Conflict, AlreadyExists, TooManyRequests for a refused eviction) keep working.
func TestClientErrors(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		status int
		reason metav1.StatusReason
		call   func(c *Client) error
		is     func(error) bool
	}{
		{"not found", http.StatusNotFound, metav1.StatusReasonNotFound,
			func(c *Client) error { _, err := c.GetLease(ctx, "ns", "l"); return err }, apierrors.IsNotFound},
		{"conflict", http.StatusConflict, metav1.StatusReasonConflict,
			func(c *Client) error {
				_, err := c.UpdateLease(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "l", Namespace: "ns"}})
				return err
			}, apierrors.IsConflict},
		{"already exists", http.StatusConflict, metav1.StatusReasonAlreadyExists,
			func(c *Client) error {
				_, err := c.CreateLease(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "l", Namespace: "ns"}})
				return err
			}, apierrors.IsAlreadyExists},
		{"eviction refused by a budget", http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests,
			func(c *Client) error {
				return c.EvictPod(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}})
			}, apierrors.IsTooManyRequests},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := json.Marshal(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure,
				Code: int32(tc.status), Reason: tc.reason, Message: "from the test server"})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(&fakeServer{status: tc.status, body: string(st)})
			defer srv.Close()
			// No retries on 429: a Retry-After header would be needed for client-go to retry.
			c, err := NewClient(&rest.Config{Host: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			err = tc.call(c)
			if !tc.is(err) {
				t.Fatalf("err = %v (%T), not %s", err, err, tc.name)
			}
		})
	}
}
