#!/usr/bin/env bash
# Benchmark of `evictguard migrate`'s copy engine (issue 7), in one run on this machine:
#  1. throughput: the engine (remediate.CopyTree) vs `cp -a` copying the same tree between the
#     same two filesystems, interleaved, best of BENCH_ROUNDS each, both timed from outside as
#     whole processes (target: engine >= 0.9x cp -a);
#  2. system calls: `strace -c -f` of one copy by each, per regular file — unlike the times,
#     these do not depend on what else the machine runs (BENCH_STRACE=0 skips it);
#  3. downtime with pre-copy: the migration's own sequence — the bulk is copied while the
#     "runtime" runs, then its preverify step (a catch-up pass and a full verification, still
#     running), ~1 % of the files then change, and what runs while the runtime is stopped (the
#     delta pass with deletions and the verification after the stop: changed entries in full,
#     the rest by status) is timed as a fraction of the full copy time (target <= 0.2). The
#     preverify step and a full verification of the same trees are printed for comparison,
#     outside the downtime. This pass changes the source tree, so it runs after the
#     throughput rounds.
# The tree looks like a runtime root: many small files, some large ones, hard links, a sparse
# file, symlinks. Source and target are separate tmpfs mounts (different st_dev, as migrate
# requires) so that the figures measure the copier, not one disk's cache state.
# Settings: BENCH_SIZE_MB (data, default 512), BENCH_ROUNDS (default 3), BENCH_STRACE (default
# 1). Needs root (mount).
# Systemd/runtime stop-start time is not in these figures; the e2e tests log it ("runtime
# downtime" in the kubelet step of TestMigrateContainerd).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB="${BENCH_SIZE_MB:-512}"
ROUNDS="${BENCH_ROUNDS:-3}"
STRACE="${BENCH_STRACE:-1}"
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
bytes=$(du -s --block-size=1 "$tree" | cut -f1)  # allocated: the sparse hole is not data
entries=$(find "$tree" | wc -l)
files=$(find "$tree" -type f | wc -l)        # names: a hard link counts once per name

go test -c -o "$work/remediate.test" ./remediate >/dev/null
engine() { # engine PASSES: runs TestCopyBench, prints its BENCH lines
  EVICTGUARD_BENCH_PASSES="$1" EVICTGUARD_BENCH_SRC="$tree" EVICTGUARD_BENCH_DST="$dst" \
    "$work/remediate.test" -test.run '^TestCopyBench$' -test.count=1 | grep '^BENCH'
}
# timed CMD...: runs CMD and sets t_real, t_cpu (user+sys) in seconds.
timed() {
  local out
  out=$( { TIMEFORMAT='%R %U %S'; time "$@" >/dev/null; } 2>&1 )
  read -r t_real u s <<<"$out"
  t_cpu=$(echo "$u + $s" | bc)
}

echo "bench-migrate: throughput, $ROUNDS interleaved rounds"
best_cp="" best_eg="" best_cp_cpu="" best_eg_cpu=""
for r in $(seq 1 "$ROUNDS"); do
  rm -rf "$dst/cp" "$dst/full"
  timed cp -a "$tree" "$dst/cp"; cp_real=$t_real cp_cpu=$t_cpu
  rm -rf "$dst/cp"
  timed engine full; eg_real=$t_real eg_cpu=$t_cpu
  rm -rf "$dst/full"
  echo "round $r: cp -a ${cp_real}s (cpu ${cp_cpu}s)  engine ${eg_real}s (cpu ${eg_cpu}s)"
  if [[ -z "$best_cp" ]] || (( $(echo "$cp_real < $best_cp" | bc) )); then best_cp=$cp_real; fi
  if [[ -z "$best_eg" ]] || (( $(echo "$eg_real < $best_eg" | bc) )); then best_eg=$eg_real; fi
  if [[ -z "$best_cp_cpu" ]] || (( $(echo "$cp_cpu < $best_cp_cpu" | bc) )); then best_cp_cpu=$cp_cpu; fi
  if [[ -z "$best_eg_cpu" ]] || (( $(echo "$eg_cpu < $best_eg_cpu" | bc) )); then best_eg_cpu=$eg_cpu; fi
done

# Runtime-internal calls of the Go engine (scheduler, signals, memory) are listed apart: they
# are not work per file and vary with the load.
runtime_calls='futex|nanosleep|sched_yield|epoll_pwait|epoll_ctl|epoll_create1|eventfd2|rt_sigaction|rt_sigprocmask|rt_sigreturn|sigaltstack|tgkill|getpid|gettid|clone3?|mmap|munmap|mprotect|madvise|rseq|set_robust_list|set_tid_address|prlimit64|sched_getaffinity|brk|arch_prctl|getrandom|uname|pipe2'
syscalls_per_file() { # FILE: prints "total  per-syscall..." per regular file, runtime calls apart
  awk -v files="$files" -v rt="^(${runtime_calls})$" '
    $1 ~ /^[0-9.]+$/ && NF >= 5 { name = $NF; calls = ($4 ~ /^[0-9]+$/) ? $4 : 0
      if (name == "total") next
      if (name ~ rt) { rtc += calls; next }
      tot += calls; if (calls >= files / 4) top = top sprintf(" %s=%.2f", name, calls / files) }
    END { printf "%.1f/file (%s ) + %.1f/file runtime-internal\n", tot / files, top, rtc / files }' "$1"
}
if [[ "$STRACE" == 1 ]] && command -v strace >/dev/null; then
  echo "bench-migrate: counting system calls (strace -c -f, one copy each)"
  rm -rf "$dst/cp" "$dst/full"
  strace -f -c -o "$work/cp.strace" cp -a "$tree" "$dst/cp"
  rm -rf "$dst/cp"
  strace -f -c -o "$work/eg.strace" env EVICTGUARD_BENCH_PASSES=full EVICTGUARD_BENCH_SRC="$tree" EVICTGUARD_BENCH_DST="$dst" \
    "$work/remediate.test" -test.run '^TestCopyBench$' -test.count=1 >/dev/null
  rm -rf "$dst/full"
  sc_cp=$(syscalls_per_file "$work/cp.strace")
  sc_eg=$(syscalls_per_file "$work/eg.strace")
fi

echo "bench-migrate: downtime with pre-copy, $ROUNDS rounds (each changes ~1 % of the tree)"
best_down="" best_pre=""
for r in $(seq 1 "$ROUNDS"); do
  rm -rf "$dst/pre"
  out=$(engine downtime)
  down=$(echo "$out" | sed -n 's/.*downtime_seconds=\([0-9.]*\).*/\1/p')
  pre=$(echo "$out" | sed -n 's/.*precopy_seconds=\([0-9.]*\).*/\1/p')
  field() { echo "$out" | grep -o "\b$1=[0-9.]*" | head -1; }
  echo "round $r: $(field precopy_seconds) | running: $(field catchup_seconds) $(field preverify_seconds) | stopped: $(field delta_seconds) $(field verify_seconds) ($(field verified_full), $(field verified_stat_only); a full verification: $(field full_verify_seconds)) $(field downtime_seconds) $(field downtime_fraction)"
  if [[ -z "$best_down" ]] || (( $(echo "$down < $best_down" | bc) )); then best_down=$down; fi
  if [[ -z "$best_pre" ]] || (( $(echo "$pre < $best_pre" | bc) )); then best_pre=$pre; fi
done
# Best of each, as for the throughput: the least disturbed measurement of either.
best_frac=$(echo "scale=3; $best_down / $best_pre" | bc)
rm -rf "$dst/pre"

ratio=$(echo "scale=3; $best_cp / $best_eg" | bc)
ratio_cpu=$(echo "scale=3; $best_cp_cpu / $best_eg_cpu" | bc)
printf '\n%-34s %s\n' "tree" "$(( bytes >> 20 )) MiB of data, $entries entries, $files file names"
printf '%-34s %.3fs (%.0f MiB/s), cpu %.3fs\n' "cp -a (best of $ROUNDS)" "$best_cp" "$(echo "$bytes / 1048576 / $best_cp" | bc -l)" "$best_cp_cpu"
printf '%-34s %.3fs (%.0f MiB/s), cpu %.3fs\n' "evictguard copy (best of $ROUNDS)" "$best_eg" "$(echo "$bytes / 1048576 / $best_eg" | bc -l)" "$best_eg_cpu"
if [[ -n "${sc_cp:-}" ]]; then
  printf '%-34s %s\n' "system calls, cp -a" "$sc_cp"
  printf '%-34s %s\n' "system calls, evictguard copy" "$sc_eg"
fi
printf '%-34s %.3fx (cpu time: %.3fx)\n' "throughput vs cp -a" "$ratio" "$ratio_cpu"
res=PASS; (( $(echo "$ratio >= 0.9" | bc) )) || res=MISS
printf '%-34s %.3fx  (target >= 0.9)  %s\n' "throughput ratio" "$ratio" "$res"
res2=PASS; (( $(echo "$best_frac <= 0.2" | bc) )) || res2=MISS
printf '%-34s %.3f  (%.3fs / %.3fs, best of %s each; target <= 0.2)  %s\n' "downtime / full copy (pre-copy)" "$best_frac" "$best_down" "$best_pre" "$ROUNDS" "$res2"
[[ $res == PASS && $res2 == PASS ]]
