#!/usr/bin/env bash
# The cost of metrics on the hot path, in instructions: our server under callgrind
# (valgrind) for one fixed nfs-bench workload (32 MiB written and read with 1 and 2 requests
# in flight, 500 files created, stat'ed and removed), once with --metrics=true and once with
# --metrics=false. Instruction counts repeat to a fraction of a percent on noisy machines,
# where throughput does not. Needs root (serve), valgrind, and a release build of the server
# and nfs-bench. Prints the total instructions of each run.
#
#   bench/metrics-cost.sh
set -euo pipefail
command -v valgrind >/dev/null || apt-get install -y valgrind >/dev/null
REPO=$(cd "$(dirname "$0")/.." && pwd)
B=$REPO/target/release/nfs-server-provisioner
NB=$REPO/target/release/nfs-bench
for mode in true false; do
  root=${TMPDIR:-/var/tmp}/metrics-cost-root; rm -rf $root; mkdir -p $root
  $B volume add bench --export-root $root >/dev/null
  valgrind --tool=callgrind --callgrind-out-file=${TMPDIR:-/var/tmp}/metrics-cost.$mode.out $B serve --export-root $root \
    --bind 127.0.0.1 --nfs-port 15049 --mount-port 15048 --portmap-port 0 --http-port 0 \
    --nlm-port 0 --statd-port 0 --no-controller --metrics=$mode 2>${TMPDIR:-/var/tmp}/metrics-cost.$mode.log &
  pid=$!
  for i in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/15049) 2>/dev/null && break; sleep 0.1; done
  $NB --target name=ours,addr=127.0.0.1,nfs=15049,mount=15048,export=/export/bench \
    --size-mib 32 --files 500 --repeat 1 --streams 2 > ${TMPDIR:-/var/tmp}/metrics-cost.$mode.bench 2>&1
  kill -INT $pid; wait $pid || true
  echo "metrics=$mode: $(grep -E '^summary|^totals' ${TMPDIR:-/var/tmp}/metrics-cost.$mode.out | head -1)"
done
