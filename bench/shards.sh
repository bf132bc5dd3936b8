#!/usr/bin/env bash
# Aggregate sequential throughput of 1, 2 and 3 shards on this machine: N `serve` processes,
# each with its own export root and volume, on 127.0.0.2 .. 127.0.0.N+1 (the way shards of one
# release run on N pods), all written and then all read at the same time by nfs-bench
# --aggregate (one client process, 8 connections per shard). Prints one table row per N.
#
# Usage: bench/shards.sh [SERVER_BINARY] [nfs-bench options...]   (default --repeat 5)
# The same total of BENCH_TOTAL_MIB (default 1536) is written and read at every N, split evenly
# over the shards (1536, 768 + 768, 512 x 3), so the page cache and the disk's writeback see the
# same amount of data whatever N is. Needs root (a private network namespace). Export roots live under BENCH_TMP (default
# target/bench-tmp, a disk file system) and are removed afterwards. BENCH_SHARDS="1 2 3" picks
# the shard counts.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${1:-}" != "__inside" ]]; then
    server="$repo/target/release/nfs-server-provisioner"
    if [[ $# -gt 0 && "$1" != -* ]]; then
        server="$1"
        shift
    fi
    [[ -x "$server" ]] || { echo "server binary not found: $server" >&2; exit 2; }
    server="$(cd "$(dirname "$server")" && pwd)/$(basename "$server")"
    (cd "$repo" && cargo build -j1 --release -p nfs-bench)
    exec unshare --net --mount --propagation private -- bash "${BASH_SOURCE[0]}" __inside "$server" "$@"
fi

server="$2"
shift 2
bench="$repo/target/release/nfs-bench"
opts=("$@")
[[ ${#opts[@]} -eq 0 ]] && opts=(--repeat 5)
total="${BENCH_TOTAL_MIB:-1536}"
export NO_COLOR=1 RUST_BACKTRACE=0
ip link set lo up
mount -t tmpfs tmpfs /run

base="${BENCH_TMP:-$repo/target/bench-tmp}"
mkdir -p "$base"
tmp="$(mktemp -d "$base/shards.XXXXXX")"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

echo "# bench/shards.sh $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, kernel $(uname -r)," \
    "export fs $(findmnt -n -o FSTYPE,SOURCE --target "$base" | tr -s ' '), load average $(cut -d' ' -f1-3 /proc/loadavg)"
rows=()
for n in ${BENCH_SHARDS:-1 2 3}; do
    targets=()
    for i in $(seq 0 $((n - 1))); do
        addr="127.0.0.$((i + 2))"
        root="$tmp/n$n-shard$i"
        mkdir -p "$root"
        "$server" volume add bench --export-root "$root" >"$root.log" 2>&1
        "$server" serve --export-root "$root" --bind "$addr" --nfs-port 2049 --mount-port 20048 \
            --portmap-port 0 --nlm-port 0 --statd-port 0 --http-port 0 --no-controller \
            >>"$root.log" 2>&1 &
        pids+=("$!")
        for _ in $(seq 300); do port_open "$addr" 2049 && port_open "$addr" 20048 && break; sleep 0.1; done
        targets+=(--target "name=shard$i,addr=$addr,nfs=2049,mount=20048,export=/export/bench")
    done
    echo "## $n shard(s)"
    out="$("$bench" --aggregate "${targets[@]}" --size-mib $((total / n)) "${opts[@]}")"
    echo "$out"
    rows+=("$(echo "$out" | tail -n 1)")
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
done
echo
echo "| shards | seq write, aggregate MiB/s | seq read, aggregate MiB/s |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
