#!/usr/bin/env bash
# Builds the Kubernetes programs the e2e tests run at one pinned Kubernetes version from the Go module proxy
# into a cache directory outside the repository. Idempotent: reuses the binaries when present.
# K8S_VERSION overrides the version (default hack/k8s-version); K8S_BINARIES the programs
# (default: kubelet, kube-apiserver, and for the DaemonSet-as-pods tests the cluster around a node — kube-controller-manager, kube-scheduler, kube-proxy; the second, older kubelet of hack/k8s-version-old is built
# alone).
#
# Why a throwaway module: k8s.io/kubernetes cannot be `go install`ed directly because its go.mod
# replaces every k8s.io/<staging> module with ./staging/...; we pin each to its v0.Y.Z release.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-$(cat "$(dirname "$0")/k8s-version")}"
CACHE="${EVICTGUARD_CACHE:-/var/cache/evictguard}"
OUT="$CACHE/k8s-$K8S_VERSION"
read -r -a binaries <<<"${K8S_BINARIES:-kubelet kube-apiserver kube-controller-manager kube-scheduler kube-proxy}"

# The cache is valid for this exact recipe: a change to this script rebuilds (relinks, when
# only flags changed, since the Go build cache keeps the compiled packages).
recipe=$(sha256sum "$0" | cut -c1-16)
cached=1
for b in "${binaries[@]}"; do
  [[ -x "$OUT/$b" && "$(cat "$OUT/recipe.$b" 2>/dev/null)" == "$recipe" ]] || cached=0
done
if ((cached)); then
  echo "build-k8s: ${binaries[*]} $K8S_VERSION cached in $OUT"
  exit 0
fi

start=$(date +%s)
work="$CACHE/build-$K8S_VERSION"
mkdir -p "$work" "$OUT"
cd "$work"
minor="${K8S_VERSION#v1.}"   # e.g. 37.2
staging_version="v0.$minor"

cat > go.mod <<MOD
module evictguard.local/k8sbuild

go 1.25

require k8s.io/kubernetes $K8S_VERSION
MOD
{
  printf '//go:build tools\n\npackage tools\n\nimport (\n'
  for b in "${binaries[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b"; done
  printf ')\n'
} > tools.go

# Fetch the kubernetes go.mod to learn the list of staging modules it replaces.
GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" > dl.json
gomod=$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' dl.json)
replaces=$(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod" | sort -u)
if [[ -z "$replaces" ]]; then
  echo "build-k8s: found no staging replaces in $gomod" >&2
  exit 1
fi
tags=()
for m in $replaces; do
  v="$staging_version"
  if [[ "$m" == k8s.io/legacy-cloud-providers ]]; then
    # Up to 1.30 the in-tree cloud providers are a staging module; Kubernetes' own
    # providerless build tag leaves them out of the kubelet except for one credential helper
    # (1.29's cmd/kubelet imports pkg/credentialprovider/gcp untagged). The module proxy does
    # not serve every release of it (none of 1.29), so take the nearest later one it has.
    tags=(-tags providerless)
    # (asked outside the build module, whose graph cannot load until the replace is in)
    if ! (cd "$CACHE" && go mod download "$m@$v") >/dev/null 2>&1; then
      v=$(cd "$CACHE" && go list -m -versions "$m" | tr ' ' '\n' | sed 1d | sort -V | awk -v want="$v" '
        { split($0, a, /[.v]/); split(want, b, /[.v]/) }
        a[3] > b[3] || (a[3] == b[3] && a[4] >= b[4]) { print; exit }')
      [[ -n "$v" ]] || { echo "build-k8s: no release of $m at or after $staging_version is served" >&2; exit 1; }
      echo "build-k8s: $m $staging_version is not served; using $v"
    fi
  fi
  go mod edit -replace "$m=$m@$v"
done
GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true
# Stamp the version the way Kubernetes' own build does (hack/lib/version.sh), so that
# `kubelet --version` says v1.X.Y rather than v0.0.0-master.
pkg=k8s.io/component-base/version
major=1; minor="${minor%%.*}"
ldflags="-X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=$major -X k8s.io/client-go/pkg/version.gitMinor=$minor"
for b in "${binaries[@]}"; do
  GOFLAGS=-mod=mod go build "${tags[@]}" -trimpath -ldflags "$ldflags" -o "$OUT/$b.tmp" "k8s.io/kubernetes/cmd/$b"
  mv "$OUT/$b.tmp" "$OUT/$b"
  echo "$recipe" > "$OUT/recipe.$b"
done
echo "build-k8s: built ${binaries[*]} $K8S_VERSION in $(( $(date +%s) - start ))s into $OUT"
