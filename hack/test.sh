#!/usr/bin/env bash
# The whole test suite, as README.md gives it and .ci/run calls it: set up the real
# components (idempotent), check formatting, vet and lint, then run every test with real
# components required (EVICTGUARD_E2E_STRICT=1: a missing component fails instead of skipping),
# then check that nothing the harness started or mounted is left.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${EVICTGUARD_CACHE:-/var/cache/evictguard}"
GOLANGCI_LINT_VERSION="${GOLANGCI_LINT_VERSION:-v2.15.0}"
start=$(date +%s)

./hack/setup.sh
setup_done=$(date +%s)
echo "test: setup took $(( setup_done - start ))s"

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [[ -n "$unformatted" ]]; then
  echo "test: gofmt would change: $unformatted" >&2
  exit 1
fi
go vet ./...
"$CACHE/bin/golangci-lint-$GOLANGCI_LINT_VERSION" run ./...
lint_done=$(date +%s)
echo "test: gofmt, go vet and golangci-lint clean in $(( lint_done - setup_done ))s"

# Host paths the suite must not leave behind (it points every component at temp dirs; the
# kubelet's fixed paths are removed by the harness).
host_paths=(/var/lib/kubelet /var/log/pods /var/log/containers /var/lib/evictguard /etc/evictguard)
preexisting=()
for p in "${host_paths[@]}"; do [[ -e "$p" ]] && preexisting+=("$p"); done

rc=0
EVICTGUARD_E2E_STRICT=1 go test -count=1 -timeout 60m ./... || rc=$?

# Nothing the harness started or mounted may outlive the suite.
leaks=$(grep -c ' /tmp/evictguard-e2e' /proc/self/mountinfo || true)
procs=$(pgrep -f '/tmp/evictguard-e2e/' || true)
loops=$(losetup -l -n -O NAME,BACK-FILE | grep ' /tmp/evictguard-e2e' || true)
if [[ "$leaks" != "0" || -n "$procs" || -n "$loops" ]]; then
  echo "test: FAIL: left behind $leaks mounts, processes: $procs, loop devices: $loops" >&2
  grep ' /tmp/evictguard-e2e' /proc/self/mountinfo >&2 || true
  rc=1
else
  echo "test: no harness mounts, processes or loop devices left"
fi
for p in "${host_paths[@]}"; do
  if [[ -e "$p" && ! " ${preexisting[*]} " =~ " $p " ]]; then
    echo "test: FAIL: the suite created $p on the host" >&2
    rc=1
  fi
done
echo "test: go test took $(( $(date +%s) - lint_done ))s; total $(( $(date +%s) - start ))s"
exit $rc
