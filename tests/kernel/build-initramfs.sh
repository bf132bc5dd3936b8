#!/usr/bin/env bash
# Builds (and caches) what the QEMU guest boots: the Debian kernel unpacked from its .deb (never
# installed into the host's /boot) and a busybox-static initramfs holding /init and the modules
# the NFS client, the 9p host-root share and the prjquota check (loop, ext4, quota) need.
#
# Usage: build-initramfs.sh            prints two lines: KERNEL=<vmlinuz>  INITRD=<cpio.gz>
# Outputs live under $(repo)/target/kernel-cache; delete that directory to rebuild from scratch.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(git -C "$HERE" rev-parse --show-toplevel)
CACHE=$REPO/target/kernel-cache
mkdir -p "$CACHE"

# Modules to load; their dependencies are added from modules.dep.
WANT_MODULES="virtio_pci virtio_net sunrpc grace lockd nfs_acl auth_rpcgss nfs nfsv3 nfsv4
              netfs fscache 9pnet 9pnet_virtio 9p loop crc32c_generic ext4 quota_v2"

log() { echo "build-initramfs: $*" >&2; }

# dpkg/apt may be held by another job on this machine: retry instead of failing.
apt_retry() {
    local i
    for i in $(seq 1 60); do
        if "$@"; then return 0; fi
        log "apt busy or failed ($*), retry $i/60 in 5 s"
        sleep 5
    done
    return 1
}

# --- kernel: the version linux-image-amd64 points at, unpacked from its .deb -----------------
fetch_kernel() {
    local kdir=$CACHE/kernel
    if [[ -f $kdir/.complete ]]; then return 0; fi
    command -v depmod >/dev/null || apt_retry apt-get install -y kmod >&2
    local pkg
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    if [[ -z $pkg ]]; then
        # No package lists yet on a fresh machine.
        apt_retry apt-get update -q >&2
        pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    fi
    [[ -n $pkg ]] || { log "cannot resolve the kernel package behind linux-image-amd64"; exit 1; }
    log "fetching $pkg"
    rm -rf "$kdir" && mkdir -p "$kdir/dl"
    # apt-get download writes to the cwd; _apt cannot write there, hence the warning it prints.
    (cd "$kdir/dl" && apt_retry apt-get download "$pkg" >&2)
    dpkg-deb -x "$kdir"/dl/*.deb "$kdir/root"
    rm -rf "$kdir/dl"
    local ver
    ver=$(ls "$kdir/root/lib/modules")
    # Unpacking skips the postinst, which is what runs depmod.
    depmod -b "$kdir/root" "$ver"
    ln -sf "root/boot/vmlinuz-$ver" "$kdir/vmlinuz"
    echo "$ver" > "$kdir/version"
    touch "$kdir/.complete"
}

# Print the modules (paths relative to lib/modules/VER) in load order: dependencies first.
module_order() {
    local moddir=$1
    declare -A seen=()
    local -a order=()
    visit() {
        local rel=$1 dep
        [[ -n ${seen[$rel]:-} ]] && return 0
        seen[$rel]=1
        local line
        line=$(grep -E "^${rel//./\\.}:" "$moddir/modules.dep") || { log "not in modules.dep: $rel"; exit 1; }
        for dep in ${line#*:}; do visit "$dep"; done
        order+=("$rel")
    }
    local m rel
    for m in $WANT_MODULES; do
        # Module names may use - or _ in file names; match either.
        rel=$(grep -oE "^[^:]*/${m//_/[-_]}\.ko(\.xz|\.zst|\.gz)?:" "$moddir/modules.dep" | head -1)
        rel=${rel%:}
        if [[ -z $rel ]]; then
            # Built into the kernel: nothing to load.
            grep -qE "/${m//_/[-_]}\.ko" "$moddir/modules.builtin" && continue
            log "module $m not found"; exit 1
        fi
        visit "$rel"
    done
    printf '%s\n' "${order[@]}"
}

build_initramfs() {
    local ver
    ver=$(<"$CACHE/kernel/version")
    local moddir=$CACHE/kernel/root/lib/modules/$ver
    local out=$CACHE/initramfs.cpio.gz
    # Rebuild when the kernel, this script or /init change.
    local stamp
    stamp=$( (echo "$ver"; cat "$0" "$HERE/guest/init"; readlink -f "$(command -v busybox)") | sha256sum | cut -c1-16)
    if [[ -f $out && $(cat "$out.stamp" 2>/dev/null) == "$stamp" ]]; then return 0; fi
    log "building initramfs for $ver"
    local tree=$CACHE/initramfs-tree
    rm -rf "$tree"
    mkdir -p "$tree"/{bin,sbin,dev,proc,sys,tmp,mnt,host,etc,root,lib/modules,kt}
    # busybox must be static: nothing else (no libc) is in the initramfs.
    local bb
    bb=$(command -v busybox)
    if ldd "$bb" >/dev/null 2>&1; then log "$bb is not static; install busybox-static"; exit 1; fi
    cp "$bb" "$tree/bin/busybox"
    ln -s busybox "$tree/bin/sh"
    cp "$HERE/guest/init" "$tree/init"
    chmod 755 "$tree/init"
    # Enough of /etc for busybox and for name lookups of the numeric ids used by the checks.
    printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/tmp:/bin/sh\n' > "$tree/etc/passwd"
    printf 'root:x:0:\nuser:x:1000:\n' > "$tree/etc/group"
    local rel n=0
    : > "$tree/modules.list"
    while read -r rel; do
        # Decompress here so the guest's insmod needs no xz/zstd support.
        local base
        base=$(basename "$rel"); base=${base%.xz}; base=${base%.zst}; base=${base%.gz}
        case $rel in
            *.xz) xz -dc "$moddir/$rel" > "$tree/lib/modules/$base" ;;
            *.zst) zstd -qdc "$moddir/$rel" > "$tree/lib/modules/$base" ;;
            *.gz) gzip -dc "$moddir/$rel" > "$tree/lib/modules/$base" ;;
            *) cp "$moddir/$rel" "$tree/lib/modules/$base" ;;
        esac
        echo "$base" >> "$tree/modules.list"
        n=$((n + 1))
    done < <(module_order "$moddir")
    log "$n modules"
    (cd "$tree" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 > "$out.tmp"
    mv "$out.tmp" "$out"
    echo "$stamp" > "$out.stamp"
}

fetch_kernel
build_initramfs
echo "KERNEL=$CACHE/kernel/vmlinuz"
echo "INITRD=$CACHE/initramfs.cpio.gz"
