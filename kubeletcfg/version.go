package kubeletcfg

import (
	"context"
	"debug/buildinfo"
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
// kubelet's version (/configz does not include it), so this is the one place the package
// starts a process; kubeletVersionFromBuildInfo is the fallback for a binary that cannot run.
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

// gitVersionFlag is how Kubernetes' build stamps the version (hack/lib/version.sh).
var gitVersionFlag = regexp.MustCompile(`k8s\.io/component-base/version\.gitVersion=(v[0-9]+\.[0-9]+\.[0-9]+)`)

// kubeletVersionFromBuildInfo reads the version from the binary's Go build information
// without running it: the -X gitVersion of Kubernetes' own build (recorded with -ldflags), or
// the k8s.io/kubernetes module it was built from (a build outside the Kubernetes tree).
func kubeletVersionFromBuildInfo(bin string) (Version, error) {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return Version{}, fmt.Errorf("build info of %s: %w", bin, err)
	}
	for _, s := range bi.Settings {
		if s.Key == "-ldflags" {
			if m := gitVersionFlag.FindStringSubmatch(s.Value); m != nil {
				return ParseVersion(m[1])
			}
		}
	}
	if bi.Main.Path == "k8s.io/kubernetes" && strings.HasPrefix(bi.Main.Version, "v1.") {
		return ParseVersion(bi.Main.Version)
	}
	for _, d := range bi.Deps {
		if d.Path == "k8s.io/kubernetes" && strings.HasPrefix(d.Version, "v1.") {
			return ParseVersion(d.Version)
		}
	}
	return Version{}, fmt.Errorf("build info of %s names no Kubernetes version", bin)
}
