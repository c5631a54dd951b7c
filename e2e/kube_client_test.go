package e2e

import (
	"testing"

	"github.com/evictguard/evictguard/e2e/harness"
	"github.com/evictguard/evictguard/internal/kube"
)

// productClient is the product's narrow API client (kube.Client, what the daemon, apply and
// migrate use) for the harness's API server, so e2e tests drive the product's own requests
// against the real kube-apiserver; api.Client (the typed clientset) stays the test's own view.
func productClient(t testing.TB, api *harness.APIServer) kube.Interface {
	t.Helper()
	c, err := kube.NewClient(api.Config)
	if err != nil {
		t.Fatalf("product API client: %v", err)
	}
	return c
}
