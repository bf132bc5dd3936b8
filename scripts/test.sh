#!/usr/bin/env bash
# The project's test command: installs every system package the tests need, builds, and runs
# all tests — unit and in-process protocol tests, the provisioner against the Kubernetes API
# stand-in, the Helm chart with helm 3 and 4, the provisioner on a real Kubernetes control
# plane (when $KUBEBUILDER_ASSETS names etcd, kube-apiserver and kube-controller-manager), the
# libnfs C client, and the Linux kernel NFS client in a QEMU guest. Run as root on Debian 12 (the kernel test needs namespaces and
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

# Each phase: "== name" when it starts, its elapsed seconds when it ends, and a summary of
# every phase's time at the end (also when a phase fails).
phase_names=()
phase_secs=()
phase_name=""
phase_start=$SECONDS
run_start=$SECONDS
end_phase() {
  if [ -n "$phase_name" ]; then
    local took=$((SECONDS - phase_start))
    echo "== $phase_name: ${took} s"
    phase_names+=("$phase_name")
    phase_secs+=("$took")
  fi
  phase_name=""
}
phase() {
  end_phase
  phase_name=$1
  phase_start=$SECONDS
  echo "== $1"
}
summary() {
  local rc=$?
  [ -n "$phase_name" ] && [ "$rc" != 0 ] && phase_name="$phase_name (FAILED)"
  end_phase
  echo "== times"
  local i
  for i in "${!phase_names[@]}"; do
    printf '   %6d s  %s\n' "${phase_secs[$i]}" "${phase_names[$i]}"
  done
  printf '   %6d s  total\n' "$((SECONDS - run_start))"
}
trap summary EXIT

# apt and dpkg wait for a lock held by another job (unattended-upgrades, a parallel run)
# instead of failing at once, and a failed run is retried, as tests/kernel/run.sh does.
apt_retry() {
  local i
  for i in $(seq 1 60); do
    if "$@"; then return 0; fi
    echo "apt failed or dpkg is locked by another job: retry $i/60 in 5 s" >&2
    sleep 5
  done
  return 1
}

packages=(libnfs-utils qemu-system-x86 busybox-static cpio socat iproute2 util-linux xz-utils unzip
  rpcbind nfs-common python3 openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# npm fetches helm 3 and 4 for the chart tests; any npm will do.
command -v npm >/dev/null || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  phase "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt_retry apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt_retry apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# Everything is built once, in the release profile, but optimised less and without debug
# info: the same code, built in far less time on two cores (CI must finish within 30 minutes).
# Benchmarks (bench/) use the full release profile.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=false

phase "format and lint"
cargo fmt --all --check
cargo clippy -j2 --workspace --all-targets --release -- -D warnings

phase "build"
cargo build -j2 --release --workspace
bin=target/release/nfs-server-provisioner

phase "helm 3 and helm 4 for the chart tests"
mapfile -t helms < <(scripts/fetch-helm.sh)
export HELM3=${helms[0]} HELM4=${helms[1]} REQUIRE_HELM=1

phase "unit, in-process, chart and RBAC tests"
# The real-API suite runs in its own phase below.
env -u KUBEBUILDER_ASSETS cargo test -j2 --release --workspace

phase "real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager)"
if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  cargo test -j2 --release --test real_api -- --nocapture
else
  echo "skipped: KUBEBUILDER_ASSETS is not set (a directory with etcd, kube-apiserver and" \
    "kube-controller-manager; README, \"Tests\", says how to get them)"
fi

phase "libnfs client"
tests/libnfs/run.sh "$bin"

phase "Linux kernel client (QEMU guest)"
tests/kernel/run.sh "$bin"
