#!/usr/bin/env bash
# Benchmark of `evictguard migrate`'s copy engine, in one run on this machine, on each of
# BENCH_FS (default "tmpfs ext4 xfs"):
#   tmpfs  two tmpfs mounts: the CPU-bound reference (no device, everything in memory);
#   ext4   ext4 on a loop device → ext4 on another loop device: real block filesystems (5 %
#          reserved, journal, delayed allocation), page cache dropped before each cold copy;
#   xfs    the same with xfs (ftype=1, what overlay needs).
# For each:
#  1. throughput: the engine (treecopy.Copy, through remediate's TestCopyBench) vs `cp -a` and
#     `rsync -aHAX --numeric-ids` copying the same tree between the same two filesystems,
#     interleaved, best of BENCH_ROUNDS each, timed from outside as whole processes. On disks
#     every copy ends with a sync of the target filesystem inside the timing (a copy that is
#     not on the disk is not done; the migration syncs too), and each tool is timed cold (page
#     cache dropped: `echo 3 > /proc/sys/vm/drop_caches`) and warm (source cached);
#  2. system calls (tmpfs only): `strace -c -f` of one copy by cp -a and the engine, per file;
#  3. downtime with pre-copy: the migration's own sequence — bulk copy while the "runtime"
#     runs (on disks from a cold page cache, as a migration's pre-copy reads), its preverify
#     step, ~1 % of the files change, then what runs while the runtime is stopped (delta pass
#     with deletions, verification, and on disks the sync) as a fraction of the full copy
#     (with its sync).
# The tree (hack/benchtree) looks like an overlay2 data root: BENCH_SIZE_MB of data (default
# 1024) in BENCH_ENTRIES entries (default 100000) across layers, large files and many small
# ones, hard links, symlinks, whiteouts (char 0:0), opaque directories (trusted.* xattr),
# owners and setuid bits.
# Targets (exit 1 on a miss), on the disks: cold throughput >= 1.0x cp -a and downtime <= 0.1.
# tmpfs is the CPU-bound reference: its figures are printed beside them with the bounds the
# engine was first held to on a smaller tree (0.9x, 0.2), for comparison, and do not decide
# the exit status. Needs root (mounts, loop devices, mknod).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB="${BENCH_SIZE_MB:-1024}"
ENTRIES="${BENCH_ENTRIES:-100000}"
ROUNDS="${BENCH_ROUNDS:-3}"
STRACE="${BENCH_STRACE:-1}"
FILESYSTEMS="${BENCH_FS:-tmpfs ext4 xfs}"
if [[ $(id -u) -ne 0 ]]; then
  echo "bench-migrate: needs root (mounts, loop devices)" >&2
  exit 2
fi
for tool in rsync bc; do
  command -v "$tool" >/dev/null || { echo "bench-migrate: $tool missing (hack/setup.sh installs it)" >&2; exit 2; }
done

work=$(mktemp -d /var/tmp/evictguard-bench-migrate.XXXXXX)
loops=()
cleanup() {
  for m in "$work"/*/; do umount "$m" 2>/dev/null || true; done
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/benchtree" ./hack/benchtree
go test -c -o "$work/remediate.test" ./remediate >/dev/null

# mountfs NAME FS SIZE_MB: a fresh filesystem at $work/NAME.
mountfs() {
  local name=$1 fs=$2 size=$3 dir="$work/$1"
  mkdir -p "$dir"
  if [[ $fs == tmpfs ]]; then
    mount -t tmpfs -o "size=${size}m,nr_inodes=$((ENTRIES * 3))" tmpfs "$dir"
    return
  fi
  truncate -s "${size}M" "$work/$name.img"
  local dev
  dev=$(losetup --find --show "$work/$name.img")
  loops+=("$dev")
  case $fs in
    ext4) mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 -N $((ENTRIES * 3)) "$dev" ;;
    xfs) mkfs.xfs -q -f -n ftype=1 "$dev" ;;
  esac
  mount "$dev" "$dir"
}

# timed CMD...: runs CMD and sets t_real, t_cpu (user+sys) in seconds.
timed() {
  local out
  out=$( { TIMEFORMAT='%R %U %S'; time "$@" >/dev/null; } 2>&1 )
  read -r t_real u s <<<"$out"
  t_cpu=$(echo "$u + $s" | bc)
}
dropcaches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
min() { if [[ -z "$1" ]] || (( $(echo "$2 < $1" | bc) )); then echo "$2"; else echo "$1"; fi; }

# Runtime-internal calls of the Go engine (scheduler, signals, memory) are listed apart.
runtime_calls='futex|nanosleep|sched_yield|epoll_pwait|epoll_ctl|epoll_create1|eventfd2|rt_sigaction|rt_sigprocmask|rt_sigreturn|sigaltstack|tgkill|getpid|gettid|clone3?|mmap|munmap|mprotect|madvise|rseq|set_robust_list|set_tid_address|prlimit64|sched_getaffinity|brk|arch_prctl|getrandom|uname|pipe2'
syscalls_per_file() { # FILE FILES: prints calls per regular file, runtime calls apart
  awk -v files="$2" -v rt="^(${runtime_calls})$" '
    $1 ~ /^[0-9.]+$/ && NF >= 5 { name = $NF; calls = ($4 ~ /^[0-9]+$/) ? $4 : 0
      if (name == "total") next
      if (name ~ rt) { rtc += calls; next }
      tot += calls; if (calls >= files / 4) top = top sprintf(" %s=%.2f", name, calls / files) }
    END { printf "%.1f/file (%s ) + %.1f/file runtime-internal\n", tot / files, top, rtc / files }' "$1"
}

summary=()
status=0
for fs in $FILESYSTEMS; do
  echo "bench-migrate: $fs: building a ${SIZE_MB} MiB, ${ENTRIES}-entry overlay2-like tree"
  mountfs "src-$fs" "$fs" $((SIZE_MB * 2 + 512))
  mountfs "dst-$fs" "$fs" $((SIZE_MB * 3 + 512))
  src="$work/src-$fs" dst="$work/dst-$fs" tree="$work/src-$fs/root"
  "$work/benchtree" -dir "$tree" -bytes $((SIZE_MB << 20)) -entries "$ENTRIES"
  sync
  bytes=$(du -s --block-size=1 "$tree" | cut -f1)
  entries=$(find "$tree" | wc -l)
  files=$(find "$tree" -type f | wc -l)
  disk=0; [[ $fs == tmpfs ]] || disk=1
  sync_dst() { if ((disk)); then sync -f "$dst"; fi; }
  cp_run() { cp -a "$tree" "$dst/cp"; sync_dst; }
  rsync_run() { rsync -aHAX --numeric-ids "$tree/" "$dst/rsync/"; sync_dst; }
  engine_run() {
    EVICTGUARD_BENCH_SYNC=$disk EVICTGUARD_BENCH_PASSES=full EVICTGUARD_BENCH_SRC="$tree" EVICTGUARD_BENCH_DST="$dst" \
      "$work/remediate.test" -test.run '^TestCopyBench$' -test.count=1 | grep '^BENCH' >/dev/null
  }
  declare -A best=() bestcpu=()
  caches="warm"; ((disk)) && caches="cold warm"
  echo "bench-migrate: $fs: throughput, $ROUNDS interleaved rounds ($caches)"
  for r in $(seq 1 "$ROUNDS"); do
    line="round $r:"
    for tool in cp rsync engine; do
      for cache in $caches; do
        rm -rf "$dst/cp" "$dst/rsync" "$dst/full"; sync_dst
        [[ $cache == cold ]] && dropcaches
        timed "${tool}_run"
        best[$tool-$cache]=$(min "${best[$tool-$cache]:-}" "$t_real")
        bestcpu[$tool-$cache]=$(min "${bestcpu[$tool-$cache]:-}" "$t_cpu")
        line+=" $tool/$cache ${t_real}s"
      done
    done
    echo "$line"
  done
  rm -rf "$dst/cp" "$dst/rsync" "$dst/full"

  sc=""
  if [[ $fs == tmpfs && "$STRACE" == 1 ]] && command -v strace >/dev/null; then
    strace -f -c -o "$work/cp.strace" cp -a "$tree" "$dst/cp"; rm -rf "$dst/cp"
    strace -f -c -o "$work/eg.strace" env EVICTGUARD_BENCH_PASSES=full EVICTGUARD_BENCH_SRC="$tree" EVICTGUARD_BENCH_DST="$dst" \
      "$work/remediate.test" -test.run '^TestCopyBench$' -test.count=1 >/dev/null
    rm -rf "$dst/full"
    sc="system calls per file: cp -a $(syscalls_per_file "$work/cp.strace" "$files"); engine $(syscalls_per_file "$work/eg.strace" "$files")"
  fi

  echo "bench-migrate: $fs: downtime with pre-copy, $ROUNDS rounds (each changes ~1 % of the tree)"
  best_down="" best_pre=""
  for r in $(seq 1 "$ROUNDS"); do
    rm -rf "$dst/pre"; sync_dst
    # A migration's pre-copy reads a data root the page cache does not hold; what follows
    # (catch-up, verification, the stop) finds what the pre-copy and preverify read, as here.
    ((disk)) && dropcaches
    out=$(EVICTGUARD_BENCH_SYNC=$disk EVICTGUARD_BENCH_PASSES=downtime EVICTGUARD_BENCH_SRC="$tree" EVICTGUARD_BENCH_DST="$dst" \
      "$work/remediate.test" -test.run '^TestCopyBench$' -test.count=1 | grep '^BENCH')
    field() { echo "$out" | grep -o "\b$1=[0-9.]*" | head -1; }
    echo "round $r: $(field precopy_seconds) | running: $(field catchup_seconds) $(field preverify_seconds) | stopped: $(field delta_seconds) $(field verify_seconds) ($(field verified_full), $(field verified_stat_only)) $(field downtime_seconds) $(field downtime_fraction)"
    best_down=$(min "$best_down" "$(field downtime_seconds | cut -d= -f2)")
    best_pre=$(min "$best_pre" "$(field precopy_seconds | cut -d= -f2)")
  done
  rm -rf "$dst/pre"
  frac=$(echo "scale=3; $best_down / $best_pre" | bc)

  base=warm; ((disk)) && base=cold
  ratio=$(echo "scale=3; ${best[cp-$base]} / ${best[engine-$base]}" | bc)
  want_ratio=0.9 want_down=0.2
  ((disk)) && { want_ratio=1.0; want_down=0.1; }
  r1=PASS; (( $(echo "$ratio >= $want_ratio" | bc) )) || { r1=MISS; ((disk)) && status=1; }
  r2=PASS; (( $(echo "$frac <= $want_down" | bc) )) || { r2=MISS; ((disk)) && status=1; }
  if ((!disk)); then r1="($r1, reference)"; r2="($r2, reference)"; fi
  rate() { printf '%.0f MiB/s' "$(echo "$bytes / 1048576 / $1" | bc -l)"; }
  summary+=("== $fs: $(( bytes >> 20 )) MiB of data, $entries entries, $files file names")
  for cache in $caches; do
    for tool in cp rsync engine; do
      summary+=("$(printf '  %-7s %-5s %8.3fs  %-11s cpu %.3fs' "$tool" "$cache" "${best[$tool-$cache]}" "$(rate "${best[$tool-$cache]}")" "${bestcpu[$tool-$cache]}")")
    done
    summary+=("$(printf '  engine vs cp -a (%s): %.3fx, vs rsync: %.3fx' "$cache" "$(echo "scale=3; ${best[cp-$cache]} / ${best[engine-$cache]}" | bc)" "$(echo "scale=3; ${best[rsync-$cache]} / ${best[engine-$cache]}" | bc)")")
  done
  [[ -n "$sc" ]] && summary+=("  $sc")
  summary+=("$(printf '  throughput vs cp -a (%s): %.3fx (target >= %s) %s' "$base" "$ratio" "$want_ratio" "$r1")")
  summary+=("$(printf '  downtime / full copy: %.3f (%.3fs / %.3fs, best of %s; target <= %s) %s' "$frac" "$best_down" "$best_pre" "$ROUNDS" "$want_down" "$r2")")
  umount "$src" "$dst"
done

echo
printf '%s\n' "${summary[@]}"
exit $status
