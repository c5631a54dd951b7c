#!/usr/bin/env bash
# make bench: the performance figures of issue 4, in one run on this machine.
#  1. go test -bench in monitor/ (one full evaluation cycle, one prediction fit, one scrape);
#  2. hack/benchcmp: evictguard's cycle against node_exporter's filesystem collector on the
#     same mounts, interleaved, and the steady RSS of `evictguard run` (method in
#     hack/benchcmp/main.go). Prints a table with PASS/MISS against the targets
#     (cycle <= 0.5x node_exporter's scrape; RSS <= 40 MiB) and exits 1 on a MISS.
# Settings: BENCH_N (measurements, default 1000), BENCH_RSS_AFTER (default 60s).
# Needs Debian's prometheus-node-exporter (installed here when missing and root).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${BENCH_N:-1000}"
RSS_AFTER="${BENCH_RSS_AFTER:-60s}"
NODE_EXPORTER="${NODE_EXPORTER:-/usr/bin/prometheus-node-exporter}"

if [[ ! -x "$NODE_EXPORTER" ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "bench: $NODE_EXPORTER missing: install Debian package prometheus-node-exporter (as root)" >&2
    exit 2
  fi
  echo "bench: installing prometheus-node-exporter"
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-node-exporter >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-node-exporter >/dev/null; }
  rm -f /usr/sbin/policy-rc.d
fi

work=$(mktemp -d /tmp/evictguard-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT
version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
go build -ldflags "-X main.version=$version" -o "$work/evictguard" ./cmd/evictguard
go build -o "$work/benchcmp" ./hack/benchcmp

# A fixed layout, whatever else runs here (e2e kubelets come and go): a kubeadm-style kubelet
# whose config file sets no evictionHard (so the five 1.30+ defaults), root dir
# /var/lib/kubelet, containerd as the runtime.
cat > "$work/kubelet.yaml" <<'YAML'
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
YAML

echo "bench: go test -bench ./monitor/ ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"
go test -run '^$' -bench . -benchmem -benchtime 2000x ./monitor/ | grep -E '^Benchmark'

echo
echo "bench: evictguard vs node_exporter $("$NODE_EXPORTER" --version 2>&1 | head -1 | awk '{print $3}'), n=$N, RSS after $RSS_AFTER"
"$work/benchcmp" -evictguard "$work/evictguard" -node-exporter "$NODE_EXPORTER" -n "$N" -rss-after "$RSS_AFTER" \
  -kubelet-cmdline "--config=$work/kubelet.yaml --root-dir=/var/lib/kubelet" -kubelet-version 1.37 -runtime containerd \
  -work-dir "$work"
