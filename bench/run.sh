#!/usr/bin/env bash
# Side-by-side benchmark (testing layer 6): our server and NFS-Ganesha 4.3 on the same
# loopback, measured by the same client (nfs-bench) in one run.
#
# Usage: bench/run.sh [SERVER_BINARY] [nfs-bench options...]
#        bench/run.sh --ganesha-only [nfs-bench options...]
# BENCH_VOLUME_ARGS adds flags to our `volume add` (e.g. --size 100Gi: a size limit to enforce).
# BENCH_SERVE_ARGS adds flags to our `serve` (e.g. --metrics=false to measure the cost of
# metrics). Pass --v4 to measure over NFSv4.1 (both servers export the same path through their
# pseudo-roots). SERVER_BINARY defaults to target/release/nfs-server-provisioner. nfs-bench options, e.g.
# `--size-mib 256 --files 2000`, are passed through (see `nfs-bench --help`).
#
# Runs inside a private network + mount namespace (needs root): port 111 belongs to a private
# rpcbind for Ganesha, ours runs without its portmapper (the client is given explicit ports).
#   ours:    NFS 2049,  MOUNT 20048, export /export/bench
#   Ganesha: NFS 20490, MOUNT 20480, export /export/bench (Pseudo, Mount_Path_Pseudo)
# Export directories live on a disk file system (default target/bench-tmp, override with
# BENCH_TMP) and are removed afterwards. The output is also saved to target/bench-last.txt.
#
# BENCH_EXT4=1: instead, inside the private mount namespace, make a sparse image file
# (target/bench-ext4.img, BENCH_EXT4_SIZE bytes, default 8G), `mkfs.ext4 -q -F` it, tables not lazily initialised (ordinary
# journaled ext4, default options), mount it with `-o loop` on target/bench-ext4 and put both
# export directories there; it is unmounted and deleted afterwards. This machine's root disk is
# ext4 WITHOUT a journal, where a directory fsync costs far less than on a journaled file
# system. The header line names the export fs and whether it has a journal.
#
# Small calls, many in flight on one connection (a pipelining client):
#   bench/run.sh target/release/nfs-server-provisioner --meta [--depths 1,16,64] [--files 10000]
# BENCH_PIN decides where the processes run (one call in flight is one wake-up of the server and
# one of the client per call, and on a VM whether they share a CPU changes the round trip more
# than anything a server does; left to the scheduler, each run lands either way at random):
#   BENCH_PIN=same   both servers and nfs-bench on CPU 0 (no cross-CPU wake-ups)
#   BENCH_PIN=split  both servers on CPU 0, nfs-bench on CPU 1 (every wake-up crosses CPUs)
# Unset: no pinning. The header line says which.
# Everything after the server binary goes to nfs-bench unchanged (`--repeat 6` is the default:
# the order of the two servers alternates between repetitions).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ "${1:-}" != "__inside" ]]; then
    server="$repo/target/release/nfs-server-provisioner"
    if [[ $# -gt 0 && "$1" != -* ]]; then
        server="$1"
        shift
    elif [[ "${1:-}" == "--ganesha-only" ]]; then
        server="none"
        shift
    fi
    if [[ "$server" != "none" ]]; then
        [[ -x "$server" ]] || { echo "server binary not found: $server" >&2; exit 2; }
        server="$(cd "$(dirname "$server")" && pwd)/$(basename "$server")"
    fi
    (cd "$repo" && cargo build -j1 --release -p nfs-bench)
    if ! command -v ganesha.nfsd >/dev/null || ! command -v rpcbind >/dev/null \
        || [[ ! -e /usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so ]]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y nfs-ganesha nfs-ganesha-vfs rpcbind >/dev/null 2>&1 || {
            apt-get update >/dev/null && apt-get install -y nfs-ganesha nfs-ganesha-vfs rpcbind >/dev/null
        }
    fi
    exec unshare --net --mount --propagation private -- bash "${BASH_SOURCE[0]}" __inside "$server" "$@"
fi

# ---------------------------------------------------------------------------
# Inside the private namespace from here on.
server="$2"
shift 2
bench="$repo/target/release/nfs-bench"
# Plain server logs (no ANSI colours) and plain error reports.
export NO_COLOR=1 RUST_BACKTRACE=0

ip link set lo up
ip addr add 127.0.0.2/8 dev lo
mount -t tmpfs tmpfs /run

server_cpu=()
client_cpu=()
case "${BENCH_PIN:-}" in
    "") ;;
    same) server_cpu=(taskset -c 0); client_cpu=(taskset -c 0) ;;
    split) server_cpu=(taskset -c 0); client_cpu=(taskset -c 1) ;;
    *) echo "BENCH_PIN must be same or split" >&2; exit 2 ;;
esac

pids=()
status=1
tmp=""
base=""
img=""
ext4_mnt=""

cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [[ $status -ne 0 && -n "$tmp" ]]; then
        for f in "$tmp"/ours.log "$tmp"/ganesha.log; do
            [[ -f "$f" ]] || continue
            echo "--- last 30 lines of $(basename "$f") ---"
            tail -n 30 "$f"
        done
    fi
    [[ -n "$tmp" ]] && rm -rf "$tmp"
    if [[ -n "$ext4_mnt" ]]; then
        umount "$ext4_mnt" 2>/dev/null || true
        rmdir "$ext4_mnt" 2>/dev/null || true
    fi
    [[ -n "$img" ]] && rm -f "$img"
    [[ -z "$ext4_mnt" ]] && rmdir "$base" 2>/dev/null
    return 0
}
trap cleanup EXIT

if [[ "${BENCH_EXT4:-0}" == "1" ]]; then
    img="$repo/target/bench-ext4.img"
    ext4_mnt="$repo/target/bench-ext4"
    rm -f "$img"
    truncate -s "${BENCH_EXT4_SIZE:-8G}" "$img"
    # Inode tables and journal initialised now, not by a background thread during the runs
    # (which slowed whichever server went first).
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$img"
    mkdir -p "$ext4_mnt"
    mount -o loop "$img" "$ext4_mnt"
    base="$ext4_mnt"
else
    base="${BENCH_TMP:-$repo/target/bench-tmp}"
    mkdir -p "$base"
fi
fstype="$(stat -f -c %T "$base")"
if [[ "$fstype" == "tmpfs" || "$fstype" == "ramfs" ]]; then
    echo "$base is on $fstype; set BENCH_TMP to a directory on a disk file system" >&2
    exit 2
fi
# The file system's name (stat -f calls ext4 "ext2/ext3"), its device and whether it journals:
# a mounted ext3/ext4 with a journal has a jbd2 entry in /proc/fs/jbd2/DEVICE-*.
fsname="$(findmnt -n -o FSTYPE --target "$base" 2>/dev/null || echo "$fstype")"
fsdev="$(findmnt -n -o SOURCE --target "$base" 2>/dev/null || echo "?")"
journal="n/a"
if [[ "$fsname" == ext[34] ]]; then
    journal="no"
    if compgen -G "/proc/fs/jbd2/$(basename "$fsdev")-*" >/dev/null; then
        journal="yes"
    fi
    if [[ -n "$img" ]]; then
        if dumpe2fs -h "$img" 2>/dev/null | grep -q '^Filesystem features:.*has_journal'; then
            journal="$journal, has_journal in dumpe2fs -h"
        else
            journal="$journal, no has_journal in dumpe2fs -h"
        fi
    fi
fi
export_fs="$fsname on $fsdev${img:+ (loop image target/$(basename "$img"))}, journal: $journal"
tmp="$(mktemp -d "$base/run.XXXXXX")"

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_ports() {
    local pid="$1"
    shift
    local p ok
    for _ in $(seq 300); do
        ok=1
        for p in "$@"; do
            port_open "$p" || ok=0
        done
        [[ $ok -eq 1 ]] && return 0
        kill -0 "$pid" 2>/dev/null || { echo "server (pid $pid) exited during start-up" >&2; return 1; }
        sleep 0.1
    done
    echo "ports $* did not open within 30 s" >&2
    return 1
}

# NFS-Ganesha: defaults apart from the ports and the loopback address.
mkdir -p "$tmp/ganesha/export"
chmod 0777 "$tmp/ganesha/export"
cat >"$tmp/ganesha.conf" <<EOF
NFS_CORE_PARAM {
    Bind_addr = 127.0.0.1; NFS_Port = 20490; MNT_Port = 20480; Protocols = 3, 4;
    Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false; Mount_Path_Pseudo = true;
}
NFSV4 { Graceless = true; }
EXPORT {
    Export_Id = 1; Path = $tmp/ganesha/export; Pseudo = /export/bench; Protocols = 3, 4;
    Access_Type = RW; Squash = No_Root_Squash; SecType = sys; FSAL { Name = VFS; }
}
EOF
rpcbind -f -w >"$tmp/rpcbind.log" 2>&1 &
pids+=("$!")
for _ in $(seq 50); do port_open 111 && break; sleep 0.1; done
${server_cpu[@]+"${server_cpu[@]}"} ganesha.nfsd -F -f "$tmp/ganesha.conf" -L "$tmp/ganesha.log" -p "$tmp/ganesha.pid" &
ganesha_pid=$!
pids+=("$ganesha_pid")
wait_ports "$ganesha_pid" 20490 20480

targets=()
if [[ "$server" != "none" ]]; then
    mkdir -p "$tmp/ours"
    "$server" volume add bench --export-root "$tmp/ours" ${BENCH_VOLUME_ARGS:-} >"$tmp/ours.log" 2>&1
    ${server_cpu[@]+"${server_cpu[@]}"} "$server" serve --export-root "$tmp/ours" --bind 127.0.0.1 --nfs-port 2049 --mount-port 20048 \
        --portmap-port 0 --nlm-port 0 --statd-port 0 ${BENCH_SERVE_ARGS:-} >>"$tmp/ours.log" 2>&1 &
    ours_pid=$!
    pids+=("$ours_pid")
    wait_ports "$ours_pid" 2049 20048
    targets+=(--target "name=ours,addr=127.0.0.1,nfs=2049,mount=20048,export=/export/bench,pid=$ours_pid")
fi
targets+=(--target "name=Ganesha,addr=127.0.0.1,nfs=20490,mount=20480,export=/export/bench,pid=$ganesha_pid")

# Let both settle before the idle memory sample.
sleep 3
set +e
{
    echo "# nfs-bench $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, kernel $(uname -r)," \
        "export fs $export_fs, load average $(cut -d' ' -f1-3 /proc/loadavg)," \
        "CPU placement: ${BENCH_PIN:-scheduler}"
    ${client_cpu[@]+"${client_cpu[@]}"} "$bench" "${targets[@]}" "$@"
} | tee "$repo/target/bench-last.txt"
status=${PIPESTATUS[0]}
set -e
exit "$status"
