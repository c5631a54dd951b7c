#!/usr/bin/env bash
# Installs what the test suite runs for real, idempotently and quietly:
#  - Debian packages for the node components (only the missing ones; apt-get update only then),
#  - the Kubernetes programs at the pinned version, built into the cache (hack/build-k8s.sh),
#  - golangci-lint, built from the Go module proxy into the cache.
# Needs root for apt-get. Prints one line per step with its duration.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE="${EVICTGUARD_CACHE:-/var/cache/evictguard}"
GOLANGCI_LINT_VERSION="${GOLANGCI_LINT_VERSION:-v2.15.0}"
mkdir -p "$CACHE"

step() { echo "setup: $*"; }

packages=(docker.io containerd runc etcd-server prometheus prometheus-alertmanager
  prometheus-node-exporter busybox-static dbus systemd util-linux e2fsprogs xfsprogs rsync
  containernetworking-plugins iptables conntrack)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing Debian packages ${missing[*]} and not root: run as root" >&2
    exit 1
  fi
  t0=$(date +%s)
  export DEBIAN_FRONTEND=noninteractive
  # Package maintainer scripts must not start daemons on the test machine.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq >"$CACHE/apt.log" 2>&1
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$CACHE/apt.log" 2>&1 || {
    tail -20 "$CACHE/apt.log" >&2; exit 1; }
  rm -f /usr/sbin/policy-rc.d
  step "installed ${missing[*]} in $(( $(date +%s) - t0 ))s"
else
  step "Debian packages present"
fi

t0=$(date +%s)
"$here/build-k8s.sh" | sed 's/^/setup: /'
# The second, older kubelet (hack/k8s-version-old): other default thresholds, run by
# e2e/kubelet_old_test.go.
K8S_VERSION="$(cat "$here/k8s-version-old")" K8S_BINARIES=kubelet "$here/build-k8s.sh" | sed 's/^/setup: /'
step "kubernetes binaries ready in $(( $(date +%s) - t0 ))s"

if [[ ! -x "$CACHE/bin/golangci-lint-$GOLANGCI_LINT_VERSION" ]]; then
  t0=$(date +%s)
  mkdir -p "$CACHE/bin"
  GOBIN="$CACHE/bin/.build" go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_LINT_VERSION" \
    >"$CACHE/golangci-lint-build.log" 2>&1 || { tail -20 "$CACHE/golangci-lint-build.log" >&2; exit 1; }
  mv "$CACHE/bin/.build/golangci-lint" "$CACHE/bin/golangci-lint-$GOLANGCI_LINT_VERSION"
  step "built golangci-lint $GOLANGCI_LINT_VERSION in $(( $(date +%s) - t0 ))s"
else
  step "golangci-lint $GOLANGCI_LINT_VERSION cached"
fi
