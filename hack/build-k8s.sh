#!/usr/bin/env bash
# Builds kubelet and kube-apiserver at one pinned Kubernetes version from the Go module proxy
# into a cache directory outside the repository. Idempotent: reuses the binaries when present.
#
# Why a throwaway module: k8s.io/kubernetes cannot be `go install`ed directly because its go.mod
# replaces every k8s.io/<staging> module with ./staging/...; we pin each to its v0.Y.Z release.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-$(cat "$(dirname "$0")/k8s-version")}"
CACHE="${EVICTGUARD_CACHE:-/var/cache/evictguard}"
OUT="$CACHE/k8s-$K8S_VERSION"

# The cache is valid for this exact recipe: a change to this script rebuilds (relinks, when
# only flags changed, since the Go build cache keeps the compiled packages).
recipe=$(sha256sum "$0" | cut -c1-16)
if [[ -x "$OUT/kubelet" && -x "$OUT/kube-apiserver" && "$(cat "$OUT/recipe" 2>/dev/null)" == "$recipe" ]]; then
  echo "build-k8s: kubelet and kube-apiserver $K8S_VERSION cached in $OUT"
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
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO

# Fetch the kubernetes go.mod to learn the list of staging modules it replaces.
GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" > dl.json
gomod=$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' dl.json)
replaces=$(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod" | sort -u)
if [[ -z "$replaces" ]]; then
  echo "build-k8s: found no staging replaces in $gomod" >&2
  exit 1
fi
for m in $replaces; do
  go mod edit -replace "$m=$m@$staging_version"
done
GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true
# Stamp the version the way Kubernetes' own build does (hack/lib/version.sh), so that
# `kubelet --version` says v1.X.Y rather than v0.0.0-master.
pkg=k8s.io/component-base/version
major=1; minor="${minor%%.*}"
ldflags="-X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=$major -X k8s.io/client-go/pkg/version.gitMinor=$minor"
GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$OUT/kubelet.tmp" k8s.io/kubernetes/cmd/kubelet
GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$OUT/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
mv "$OUT/kubelet.tmp" "$OUT/kubelet"
mv "$OUT/kube-apiserver.tmp" "$OUT/kube-apiserver"
echo "$recipe" > "$OUT/recipe"
echo "build-k8s: built kubelet and kube-apiserver $K8S_VERSION in $(( $(date +%s) - start ))s into $OUT"
