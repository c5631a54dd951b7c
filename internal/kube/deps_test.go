package kube

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDaemonWithoutClientset keeps the typed clientset and what it drags in out of the
// evictguard binary (issue #4: ~9 MiB of RSS). Tests may import it; product code uses
// Interface.
func TestDaemonWithoutClientset(t *testing.T) {
	if testing.Short() {
		t.Skip("go list -deps of the whole binary; not in -short")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the binary's packages: %v", err)
	}
	out, err := exec.Command(goBin, "list", "-deps", "github.com/evictguard/evictguard/cmd/evictguard").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	var found []string
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"k8s.io/client-go/kubernetes", "k8s.io/client-go/applyconfigurations", "k8s.io/apimachinery/pkg/util/strategicpatch"} {
			if pkg == banned || strings.HasPrefix(pkg, banned+"/") {
				found = append(found, pkg)
			}
		}
	}
	if len(found) > 0 {
		t.Errorf("cmd/evictguard depends on %d package(s) of the typed clientset (use internal/kube's Interface): %s", len(found), strings.Join(found[:min(5, len(found))], ", "))
	}
}
