#!/usr/bin/env bash
# Start-up cost of volume sizes: every volume's usage is measured (a walk of its files) when
# the export store opens, at every server start. This builds an export root with VOLUMES
# volumes of FILES small files each (plus one subdirectory), then times opening it the way
# `serve` does (`volume list` opens the store the same way and prints each volume's usage).
#
# Usage: bench/startup-volumes.sh [SERVER_BINARY] [VOLUMES] [FILES]
#        (defaults: target/release/nfs-server-provisioner 1000 20)
# The export root lives under target/bench-tmp (a disk file system) and is removed afterwards.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${1:-$repo/target/release/nfs-server-provisioner}"
volumes="${2:-1000}"
files="${3:-20}"
[[ -x "$bin" ]] || { echo "server binary not found: $bin" >&2; exit 2; }
base="${BENCH_TMP:-$repo/target/bench-tmp}"
mkdir -p "$base"
root="$(mktemp -d "$base/startup.XXXX")"
trap 'rm -rf "$root"' EXIT

secs() { date +%s.%N; }
t0=$(secs)
for ((v = 0; v < volumes; v++)); do
    "$bin" volume add "vol$v" --size 1Gi --export-root "$root" > /dev/null
    mkdir "$root/vol$v/sub"
    for ((f = 0; f < files; f++)); do
        head -c 4096 /dev/zero > "$root/vol$v/sub/f$f"
    done
done
t1=$(secs)
sync
echo 3 > /proc/sys/vm/drop_caches 2> /dev/null || true
t2=$(secs)
"$bin" volume list --export-root "$root" > "$root.list"
t3=$(secs)
"$bin" volume list --export-root "$root" > /dev/null
t4=$(secs)
listed=$(($(wc -l < "$root.list") - 1))
rm -f "$root.list"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(stat -f -c %T "$base") export root"
echo "| volumes | files each | setup (s) | open, cold cache (s) | open, warm cache (s) |"
echo "|---:|---:|---:|---:|---:|"
awk -v n="$listed" -v f="$files" -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v e="$t4" \
    'BEGIN { printf "| %d | %d | %.1f | %.2f | %.2f |\n", n, f, b - a, d - c, e - d }'
