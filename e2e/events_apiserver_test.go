package e2e

import (
	"testing"

	"github.com/evictguard/evictguard/e2e/harness"
)

// startAPIServer is kept for tests written while the harness lacked
// --endpoint-reconciler-type=none; it is now just the harness's server.
func startAPIServer(t *testing.T) *harness.APIServer { return harness.StartAPIServer(t) }
