package kubeletcfg

import (
	"os"
	"testing"
)

// TestKubeletVersionFromBuildInfo reads the version of the kubelet the suite builds
// (hack/build-k8s.sh: outside the Kubernetes tree, so from its k8s.io/kubernetes module) and
// refuses a Go binary that is not a kubelet (the test binary itself).
func TestKubeletVersionFromBuildInfo(t *testing.T) {
	const kubelet = "/var/cache/evictguard/k8s-v1.37.2/kubelet"
	if _, err := os.Stat(kubelet); err != nil {
		t.Skipf("%s not built (make test builds it): %v", kubelet, err)
	}
	v, err := kubeletVersionFromBuildInfo(kubelet)
	if err != nil || v.String() != "1.37.2" {
		t.Errorf("version %v, %v; want 1.37.2", v, err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if v, err := kubeletVersionFromBuildInfo(self); err == nil {
		t.Errorf("a test binary gave version %v", v)
	}
}
