#!/usr/bin/env bash
# Benchmark of `evictguard migrate`'s copy engine (issue 7), in one run on this machine:
#  1. throughput: the engine (remediate.CopyTree) vs `cp -a` copying the same tree between the
#     same two filesystems, interleaved, best of BENCH_ROUNDS each (target: engine >= 0.9x cp -a);
#  2. downtime with pre-copy: the bulk is copied while the "runtime" runs, ~1 % of the files then
#     change, and what runs while the runtime is stopped (delta pass with deletions + metadata
#     verification) is timed as a fraction of the full copy time (target <= 0.2).
# The tree looks like a runtime root: many small files, some large ones, hard links, a sparse
# file, symlinks. Source and target are separate tmpfs mounts (different st_dev, as migrate
# requires) so that the figures measure the copier, not one disk's cache state.
# Settings: BENCH_SIZE_MB (data, default 512), BENCH_ROUNDS (default 3). Needs root (mount).
# Systemd/runtime stop-start time is not in these figures; the e2e tests log it ("runtime
# downtime" in the kubelet step of TestMigrateContainerd).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB="${BENCH_SIZE_MB:-512}"
ROUNDS="${BENCH_ROUNDS:-3}"
if [[ $(id -u) -ne 0 ]]; then
  echo "bench-migrate: needs root (tmpfs mounts, ownership)" >&2
  exit 2
fi

work=$(mktemp -d /tmp/evictguard-bench-migrate.XXXXXX)
src="$work/src" dst="$work/dst"
mkdir -p "$src" "$dst"
cleanup() {
  umount "$src" 2>/dev/null || true
  umount "$dst" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mount -t tmpfs -o size=$((SIZE_MB * 2 + 256))m tmpfs "$src"
mount -t tmpfs -o size=$((SIZE_MB * 3 + 256))m tmpfs "$dst"

echo "bench-migrate: building a ${SIZE_MB} MiB runtime-like tree"
tree="$src/root"
mkdir -p "$tree"
large=$((SIZE_MB / 2 / 32))   # half the data in 32 MiB files
small_mb=$((SIZE_MB - large * 32))
for i in $(seq 1 "$large"); do
  mkdir -p "$tree/overlay2/l$i/diff"
  head -c 32M /dev/urandom >"$tree/overlay2/l$i/diff/blob"
done
# The other half in 2000-file directories of 4..124 KiB files.
n=$((small_mb * 1024 / 64))
d=0
for i in $(seq 1 "$n"); do
  if (( i % 2000 == 1 )); then d=$((d + 1)); mkdir -p "$tree/overlay2/s$d/diff/usr/lib"; fi
  head -c $(( (i % 31 + 1) * 4 ))K /dev/urandom >"$tree/overlay2/s$d/diff/usr/lib/f$i"
done
for i in $(seq 1 200); do ln "$tree/overlay2/s1/diff/usr/lib/f$i" "$tree/overlay2/s1/diff/usr/lib/h$i"; done
for i in $(seq 1 200); do ln -s "f$i" "$tree/overlay2/s1/diff/usr/lib/sym$i"; done
truncate -s 1G "$tree/sparse.img"; echo data | dd of="$tree/sparse.img" bs=1 seek=$((512 << 20)) conv=notrunc status=none
chown -R 1000:1000 "$tree/overlay2/s1"
sync

go test -c -o "$work/remediate.test" ./remediate >/dev/null

best_cp="" best_eg=""
for r in $(seq 1 "$ROUNDS"); do
  rm -rf "$dst/cp" "$dst/full" "$dst/pre"
  s=$(date +%s.%N); cp -a "$tree" "$dst/cp"; e=$(date +%s.%N)
  t_cp=$(echo "$e - $s" | bc)
  rm -rf "$dst/cp"
  out=$(EVICTGUARD_BENCH_SRC="$tree" EVICTGUARD_BENCH_DST="$dst" "$work/remediate.test" -test.run '^TestCopyBench$' -test.count=1)
  full=$(echo "$out" | sed -n 's/.*full_seconds=\([0-9.]*\).*/\1/p')
  frac=$(echo "$out" | sed -n 's/.*downtime_fraction=\([0-9.]*\).*/\1/p')
  down=$(echo "$out" | sed -n 's/.*downtime_seconds=\([0-9.]*\).*/\1/p')
  echo "round $r: cp -a ${t_cp}s  engine ${full}s  downtime ${down}s (fraction ${frac})"
  echo "$out" | grep '^BENCH' | sed 's/^/    /'
  if [[ -z "$best_cp" ]] || (( $(echo "$t_cp < $best_cp" | bc) )); then best_cp=$t_cp; fi
  if [[ -z "$best_eg" ]] || (( $(echo "$full < $best_eg" | bc) )); then best_eg=$full; best_frac=$frac; fi
done

ratio=$(echo "scale=3; $best_cp / $best_eg" | bc)
bytes=$(du -s --block-size=1 "$tree" | cut -f1)  # allocated: the sparse hole is not data
printf '\n%-34s %s\n' "tree" "$(( bytes >> 20 )) MiB of data, $(find "$tree" | wc -l) entries"
printf '%-34s %.3fs (%.0f MiB/s)\n' "cp -a (best of $ROUNDS)" "$best_cp" "$(echo "$bytes / 1048576 / $best_cp" | bc -l)"
printf '%-34s %.3fs (%.0f MiB/s)\n' "evictguard copy (best of $ROUNDS)" "$best_eg" "$(echo "$bytes / 1048576 / $best_eg" | bc -l)"
res=PASS; (( $(echo "$ratio >= 0.9" | bc) )) || res=MISS
printf '%-34s %sx  (target >= 0.9)  %s\n' "throughput vs cp -a" "$ratio" "$res"
res2=PASS; (( $(echo "$best_frac <= 0.2" | bc) )) || res2=MISS
printf '%-34s %s  (target <= 0.2)  %s\n' "downtime / full copy (pre-copy)" "$best_frac" "$res2"
[[ $res == PASS && $res2 == PASS ]]
