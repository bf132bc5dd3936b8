#!/usr/bin/env bash
# Builds the server and serves a demo volume from a local export root on the standard ports
# (NFS 2049, MOUNT 20048, portmapper 111). Run as root. Ctrl-C stops it.
#   EXPORT_ROOT=/srv/export scripts/demo.sh   to choose where the data lives.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/demo.sh must run as root (try: sudo $0)" >&2
  exit 2
fi
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust >= 1.88 with rustup (https://rustup.rs), then re-run" >&2
  exit 2
fi
root=${EXPORT_ROOT:-/var/tmp/nfs-server-provisioner-demo}
mkdir -p "$root"
cargo build -j2 --release --bin nfs-server-provisioner
bin=target/release/nfs-server-provisioner
"$bin" volume list --export-root "$root" | grep -q '^demo ' || "$bin" volume add demo --export-root "$root"
portmap=111
if (exec 3<>/dev/tcp/127.0.0.1/111) 2>/dev/null; then
  echo "port 111 is taken (rpcbind?): serving without a portmapper; give the ports to mount" >&2
  portmap=0
fi
cat <<MSG

Serving $root/demo as /export/demo (NFSv4.2, 4.1 and NFSv3). From a Linux client:
  mount -t nfs SERVER:/export/demo /mnt          (NFSv4.2 or 4.1, port 2049 only)
  mount -t nfs -o vers=3,proto=tcp,port=2049,mountport=20048,mountproto=tcp,nolock SERVER:/export/demo /mnt
or with libnfs:  nfs-ls "nfs://127.0.0.1/export/demo?version=3&nfsport=2049&mountport=20048"

MSG
# --no-controller: no Kubernetes here, NFS only (without it serve warns that it found no cluster).
exec "$bin" serve --export-root "$root" --portmap-port "$portmap" --no-controller
