package kubeletcfg

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/evictguard/evictguard/internal/hostfs"
)

// fakeAPIServer answers GET /api/v1/nodes/NODE/proxy/configz like kube-apiserver: the body the
// kubelet served for a known node and bearer token, a Status for the rest.
func fakeAPIServer(t *testing.T, node, token, body string) *httptest.Server {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := func(code int, reason, msg string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
				"status": "Failure", "message": msg, "reason": reason, "code": code})
		}
		switch {
		case r.Method != http.MethodGet:
			status(http.StatusMethodNotAllowed, "MethodNotAllowed", "only GET")
		case r.Header.Get("Authorization") != "Bearer "+token:
			status(http.StatusForbidden, "Forbidden",
				`nodes "`+node+`" is forbidden: User "system:serviceaccount:evictguard:evictguard" cannot get resource "nodes/proxy" in API group "" at the cluster scope`)
		case r.URL.Path == "/api/v1/nodes/"+node+"/proxy/configz":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(body))
		case strings.HasPrefix(r.URL.Path, "/api/v1/nodes/"):
			status(http.StatusNotFound, "NotFound", `nodes "x" not found`)
		default:
			status(http.StatusNotFound, "NotFound", "the server could not find the requested resource")
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestAPIServerConfigzFetch(t *testing.T) {
	const body = `{"kubeletconfig":{"evictionHard":{"nodefs.available":"5%"}}}`
	srv := fakeAPIServer(t, "node-1", "good", body)
	cfg := func(token string) *rest.Config {
		return &rest.Config{Host: srv.URL, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	}
	tests := []struct {
		name    string
		src     *APIServerConfigz
		want    string // body
		wantErr []string
	}{
		{"proxied body", &APIServerConfigz{Config: cfg("good"), Node: "node-1"}, body, nil},
		{"forbidden names nodes/proxy", &APIServerConfigz{Config: cfg("bad"), Node: "node-1"}, "",
			[]string{"/api/v1/nodes/node-1/proxy/configz", `cannot get resource "nodes/proxy"`, "needs get on nodes/proxy", "nodes/configz is only honoured by the kubelet itself"}},
		{"unknown node", &APIServerConfigz{Config: cfg("good"), Node: "node-2"}, "", []string{"not found", `no Node "node-2"`, "--node-name"}},
		{"no node name", &APIServerConfigz{Config: cfg("good")}, "", []string{"no node name"}},
		{"no config", &APIServerConfigz{Node: "node-1"}, "", []string{"no client configuration"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.src.Fetch(context.Background())
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != tc.want {
					t.Errorf("body %q, want %q", got, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; body %q", got)
			}
			for _, sub := range tc.wantErr {
				if !strings.Contains(err.Error(), sub) {
					t.Errorf("error %q lacks %q", err, sub)
				}
			}
		})
	}
}

// TestDiscoverConfigzViaAPIServer: the proxied /configz is compared like a local one and
// named as its provenance.
func TestDiscoverConfigzViaAPIServer(t *testing.T) {
	srv := fakeAPIServer(t, "node-1", "good", `{"kubeletconfig":{"evictionHard":{"nodefs.available":"5%"}}}`)
	src := &APIServerConfigz{Node: "node-1",
		Config: &rest.Config{Host: srv.URL, BearerToken: "good", TLSClientConfig: rest.TLSClientConfig{Insecure: true}}}
	wantSource := "configz (apiserver proxy " + srv.URL + "/api/v1/nodes/node-1/proxy/configz)"
	tests := []struct {
		name     string
		flag     string
		mismatch string
	}{
		{"equal", "--eviction-hard=nodefs.available<5%", ""},
		{"different", "--eviction-hard=nodefs.available<6%",
			`evictionHard[nodefs.available]: computed "6%" (flag --eviction-hard in --kubelet-cmdline) but configz has "5%"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			eff, err := Discover(context.Background(), Options{HostRoot: hostfs.Root(t.TempDir()), Version: "1.37",
				Cmdline: []string{tc.flag}, ConfigzURL: "ignored-when-the-api-server-is-used", ConfigzAPIServer: src})
			if err != nil {
				t.Fatal(err)
			}
			if eff.ConfigzSource != wantSource || !containsSub(eff.Sources, wantSource) {
				t.Errorf("ConfigzSource %q, Sources %q; want %q", eff.ConfigzSource, eff.Sources, wantSource)
			}
			if got := strings.Join(eff.Mismatches, "\n"); got != tc.mismatch {
				t.Errorf("Mismatches %q, want %q", got, tc.mismatch)
			}
		})
	}
}

// TestFetchConfigzAPIServerNeedsAClient: commands that take only a URL or a file say so for
// "apiserver" instead of looking for a file of that name.
func TestFetchConfigzAPIServerNeedsAClient(t *testing.T) {
	_, err := FetchConfigz(context.Background(), ConfigzViaAPIServer, "")
	if err == nil || !strings.Contains(err.Error(), "give a URL or a file") {
		t.Errorf("err = %v", err)
	}
}
