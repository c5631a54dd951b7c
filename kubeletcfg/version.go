package kubeletcfg

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// DefaultKubeletVersion is assumed when the kubelet's version cannot be found out. It is the
// Kubernetes minor the project pins (hack/k8s-version, v1.37.2); every use is reported as a
// warning.
const DefaultKubeletVersion = "1.37"

// Version is a kubelet version; Patch is -1 when only major.minor is known.
type Version struct {
	Major, Minor, Patch int
}

var versionRE = regexp.MustCompile(`v?(\d+)\.(\d+)(?:\.(\d+))?`)

// ParseVersion accepts "1.37", "v1.37.2" and "Kubernetes v1.37.2" (the output of
// kubelet --version).
func ParseVersion(s string) (Version, error) {
	m := versionRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return Version{}, fmt.Errorf("kubelet version %q: want X.Y or vX.Y.Z", s)
	}
	v := Version{Patch: -1}
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	if m[3] != "" {
		v.Patch, _ = strconv.Atoi(m[3])
	}
	if v.Major != 1 {
		return Version{}, fmt.Errorf("kubelet version %q: only Kubernetes 1.x is known", s)
	}
	return v, nil
}

func mustVersion(s string) Version {
	v, err := ParseVersion(s)
	if err != nil {
		panic(err)
	}
	return v
}

// String is "1.37.2", or "1.37" when the patch level is unknown.
func (v Version) String() string {
	if v.Patch < 0 {
		return fmt.Sprintf("%d.%d", v.Major, v.Minor)
	}
	return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch)
}

// Minor is "1.37".
func (v Version) short() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// AtLeast reports whether v is 1.minor or later.
func (v Version) AtLeast(minor int) bool { return v.Major > 1 || (v.Major == 1 && v.Minor >= minor) }

// kubeletVersionOf runs "BINARY --version". There is no API or file that carries the
// kubelet's version (/configz does not include it, and reading the binary's build info would
// need the exact module layout), so this is the one place the package starts a process.
// bin is a path on this machine (already mapped under the host root).
func kubeletVersionOf(ctx context.Context, bin string) (Version, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return Version{}, fmt.Errorf("run %s --version: %w", bin, err)
	}
	return ParseVersion(string(out))
}
