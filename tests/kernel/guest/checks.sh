#!/bin/sh
# The named checks, run in the guest by main.sh as `sh -ex checks.sh NAME`: any failing command
# fails the check. Layout on the guest:
#   /mnt   the v3 mount under test (default options)
#   /mnt2  a second mount of the same export with noac,lookupcache=none: it always asks the
#          server, so reading back through it proves the data and attributes reached the server
#   /host  the host's root over 9p (read-only); /host/tmp is a guest tmpfs, /host/tmp/nfs a bind
#          of /mnt, so host-built programs run by `chroot /host` see the NFS mount
. /kt/config
CHECK=$1
SRV=10.0.2.100
OPTS="vers=3,proto=tcp,port=2049,mountport=20048,mountproto=tcp,nolock,addr=$SRV,mountaddr=$SRV"
M=/mnt
V=/mnt2
W=$M/kt
VW=$V/kt

# v4-NAME: the same check NAME on NFSv4.2 mounts (/mnt-kt4, and /mnt2-kt4 to verify), working in
# kt4; v41-NAME and v40-NAME likewise on NFSv4.1 and NFSv4.0 mounts, in kt41 and kt40.
FN=$CHECK
D=kt
case $CHECK in
v4-* | v41-* | v40-*)
    FN=${CHECK#*-}
    case $CHECK in
    v4-*) VERS=4.2 D=kt4 ;;
    v41-*) VERS=4.1 D=kt41 ;;
    v40-*) VERS=4.0 D=kt40 ;;
    esac
    OPTS="vers=$VERS,addr=$SRV,clientaddr=10.0.2.15"
    M=/mnt-$D
    V=/mnt2-$D
    W=$M/$D
    VW=$V/$D
    ;;
esac
FSTYPE=nfs
case $OPTS in vers=4*) FSTYPE=nfs4 ;; esac

fail() {
    echo "FAILED: $*" >&2
    exit 1
}
# eq GOT WANT WHAT
eq() { [ "$1" = "$2" ] || fail "$3: got '$1', want '$2'"; }
drop_caches() {
    sync
    echo 3 > /proc/sys/vm/drop_caches
}
info() { echo "$*" >> "/tmp/kt-$CHECK.info"; }
nfs_mount() { mount -t $FSTYPE -o "$OPTS${2:+,$2}" "$SRV:$KT_NFS_PATH" "$1"; }
is_mounted() { grep -q " $1 " /proc/mounts; }
sha() { sha256sum "$1" | cut -c1-64; }
ms() { echo $(($(cut -d' ' -f1 /proc/uptime | tr -d .) * 10)); }
# df_kib MOUNT COLUMN: a column of `df -kP` for MOUNT (2 size, 3 used, 4 available), in KiB.
df_kib() { df -kP "$1" | awk -v c="$2" 'NR == 2 { print $c }'; }
# wait_size MOUNT KIB: up to 10 s for df to show MOUNT's size as KIB (a size set on the server
# reaches the client at its next FSSTAT).
wait_size() {
    i=0
    while [ "$(df_kib "$1" 2)" != "$2" ] && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
}
# wait_file FILE TENTHS: up to TENTHS tenths of a second for FILE (a cue) to exist.
wait_file() {
    i=0
    while [ ! -e "$1" ] && [ $i -lt "$2" ]; do sleep 0.1; i=$((i + 1)); done
}

# Mounts what `chroot /host` needs.
host_setup() {
    is_mounted /host || fail "the host root is not mounted over 9p"
    is_mounted /host/tmp || mount -t tmpfs tmpfs /host/tmp
    is_mounted /host/proc || mount -t proc proc /host/proc
    is_mounted /host/dev || mount -t devtmpfs devtmpfs /host/dev
    is_mounted /host/run || mount -t tmpfs tmpfs /host/run
}

# host_setup, and binds the mount under test ($M) at /host/tmp/nfs.
host_bind() {
    host_setup
    mkdir -p /host/tmp/nfs
    is_mounted /host/tmp/nfs || mount --bind $M /host/tmp/nfs
}
host_unbind() {
    if is_mounted /host/tmp/nfs; then umount /host/tmp/nfs; fi
}

chk_mount() {
    mkdir -p $M $V
    nfs_mount $M
    nfs_mount $V noac,lookupcache=none
    is_mounted $M
    is_mounted $V
    ls -la $M
    # A distinct superblock, or the verify view would share the caches it should bypass.
    [ "$(stat -c %d $M)" != "$(stat -c %d $V)" ] || fail "verify mount shares the superblock"
    df $M
    # The checks' working directory (the export is fresh each run).
    mkdir -p $W
    # Round-trip time: every stat on the noac mount is one GETATTR.
    t0=$(ms)
    i=0
    while [ $i -lt 200 ]; do
        [ -d $V ]
        i=$((i + 1))
    done
    info "getattr-rtt-ms $((($(ms) - t0) / 200))"
}

chk_mkdir() {
    mkdir $W/d
    mkdir -p $W/d/a/b/c
    [ -d $VW/d/a/b/c ] || fail "nested directory not visible on the server"
    eq "$(stat -c %F $VW/d/a)" "directory" "type"
    if mkdir $W/d 2>/tmp/err; then fail "mkdir of an existing directory succeeded"; fi
    grep -q 'File exists' /tmp/err || fail "want EEXIST, got: $(cat /tmp/err)"
}

chk_write() {
    printf 'hello nfs\n' > $W/f
    eq "$(stat -c %s $VW/f)" 10 "size on the server"
    eq "$(stat -c %F $VW/f)" "regular file" "type"
}

chk_read() {
    drop_caches
    eq "$(cat $W/f)" "hello nfs" "content"
    eq "$(cat $VW/f)" "hello nfs" "content via verify mount"
}

chk_append() {
    echo second >> $W/f
    drop_caches
    eq "$(cat $VW/f)" "$(printf 'hello nfs\nsecond')" "content"
    eq "$(stat -c %s $VW/f)" 17 "size"
}

chk_rename() {
    mv $W/f $W/g
    [ ! -e $VW/f ] || fail "old name still exists"
    eq "$(head -1 $VW/g)" "hello nfs" "content under the new name"
    # Over an existing file: atomically replaces it.
    echo one > $W/r1
    echo two > $W/r2
    mv $W/r1 $W/r2
    eq "$(cat $VW/r2)" one "replaced target"
    [ ! -e $VW/r1 ] || fail "source of a replacing rename still exists"
    # A directory with contents, across directories.
    mv $W/d/a $W/z
    [ -d $VW/z/b/c ] || fail "renamed directory tree not visible"
    [ ! -e $VW/d/a ] || fail "old directory name still exists"
}

chk_symlink() {
    ln -s g $W/sl
    eq "$(readlink $VW/sl)" g "readlink"
    [ -L $VW/sl ] || fail "not a symlink"
    eq "$(head -1 $VW/sl)" "hello nfs" "read through the symlink"
    long=$(printf '%0200d' 0 | tr 0 x)/target
    ln -s "$long" $W/sl2
    eq "$(readlink $VW/sl2)" "$long" "readlink of a 207-byte target"
}

chk_hardlink() {
    ln $W/g $W/h
    eq "$(stat -c %h $VW/g)" 2 "link count of the original"
    eq "$(stat -c %h $VW/h)" 2 "link count of the link"
    eq "$(stat -c %i $VW/g)" "$(stat -c %i $VW/h)" "inode numbers"
    eq "$(head -1 $VW/h)" "hello nfs" "content through the link"
}

chk_chmod() {
    chmod 0640 $W/g
    eq "$(stat -c %a $VW/g)" 640 "file mode"
    chmod 1777 $W/d
    eq "$(stat -c %a $VW/d)" 1777 "directory mode with sticky bit"
    chmod 0755 $W/d
}

chk_chown() {
    chown 1234:1234 $W/g
    eq "$(stat -c %u:%g $VW/g)" 1234:1234 "owner"
    chown 0:1234 $W/h
    eq "$(stat -c %u:%g $VW/h)" 0:1234 "owner (hard link shares the inode)"
    chgrp 4321 $W/d
    eq "$(stat -c %g $VW/d)" 4321 "directory group"
}

chk_truncate() {
    truncate -s 5 $W/g
    eq "$(stat -c %s $VW/g)" 5 "size after shrinking"
    eq "$(cat $VW/g)" hello "content after shrinking"
    truncate -s 100000 $W/g
    eq "$(stat -c %s $VW/g)" 100000 "size after extending"
    eq "$(tail -c +6 $VW/g | tr -d '\000' | wc -c)" 0 "extended part reads as zeros"
    : > $W/g
    eq "$(stat -c %s $VW/g)" 0 "size after O_TRUNC"
    printf 'hello nfs\n' > $W/g
}

chk_utimes() {
    touch -m -d '2001-02-03 04:05:06' $W/g
    eq "$(stat -c %Y $VW/g)" 981173106 "mtime"
    touch -a -d '2002-03-04 05:06:07' $W/g
    eq "$(stat -c %X $VW/g)" 1015218367 "atime"
    eq "$(stat -c %Y $VW/g)" 981173106 "mtime after setting atime"
    # "now": the server's clock and the guest's agree to within a minute.
    touch $W/g
    now=$(date +%s)
    t=$(stat -c %Y $VW/g)
    [ $((t - now)) -lt 60 ] && [ $((now - t)) -lt 60 ] || fail "touch to now gave mtime $t, guest time $now"
}

chk_mkfifo() {
    mkfifo $W/p
    [ -p $VW/p ] || fail "not a fifo on the server"
    eq "$(stat -c %F $VW/p)" fifo "type"
    # FIFO I/O itself is local to the client; it must still work on the NFS node.
    (echo through > $W/p) &
    eq "$(cat $W/p)" through "data through the fifo"
    wait
}

chk_readdir_2000() {
    mkdir $W/many
    t0=$(ms)
    i=0
    while [ $i -lt 2000 ]; do
        : > $W/many/f$i
        i=$((i + 1))
    done
    info "readdir-create-2000-secs $((($(ms) - t0) / 1000))"
    t0=$(ms)
    # Dropping the caches makes the listings come from the server (READDIRPLUS).
    drop_caches
    ls $W/many | sort > /tmp/got
    eq "$(wc -l < /tmp/got)" 2000 "entries"
    i=0
    while [ $i -lt 2000 ]; do echo f$i; i=$((i + 1)); done | sort > /tmp/want
    cmp /tmp/want /tmp/got || fail "names differ: $(diff /tmp/want /tmp/got | head -5)"
    drop_caches
    eq "$(ls -l $W/many | grep -c '^-')" 2000 "entries with attributes"
    info "readdir-list-secs $((($(ms) - t0) / 1000))"
    t0=$(ms)
    rm -rf $W/many
    info "readdir-remove-2000-secs $((($(ms) - t0) / 1000))"
    [ ! -e $VW/many ] || fail "directory still exists after rm -rf"
}

chk_unlink() {
    rm $W/g
    [ ! -e $VW/g ] || fail "still exists"
    eq "$(stat -c %h $VW/h)" 1 "link count of the remaining link"
    eq "$(head -c 5 $VW/h)" hello "content of the remaining link"
    # Unlink while open: the client renames to .nfsXXXX and removes it on the last close.
    exec 4< $W/h
    rm $W/h
    eq "$(cat <&4)" "hello nfs" "read from an unlinked open file"
    exec 4<&-
    sleep 1
    eq "$(ls -a $VW | grep -c '^\.nfs')" 0 "leftover silly-renamed files"
    rmdir $W/z/b/c
    [ ! -e $VW/z/b/c ] || fail "rmdir: still exists"
    if rmdir $W/z 2>/tmp/err; then fail "rmdir of a non-empty directory succeeded"; fi
}

chk_big64() {
    dd if=/dev/urandom of=/tmp/r64 bs=1M count=64 2>/dev/null
    src=$(sha /tmp/r64)
    t0=$(date +%s)
    dd if=/tmp/r64 of=$W/big64 bs=1M conv=fsync
    t1=$(date +%s)
    eq "$(sha $W/big64)" "$src" "checksum before remount"
    # Drop every cache of it: unmount (binds too), drop caches, mount again.
    host_unbind
    umount $M
    drop_caches
    nfs_mount $M
    t2=$(date +%s)
    eq "$(sha $W/big64)" "$src" "checksum after remount"
    t3=$(date +%s)
    eq "$(stat -c %s $VW/big64)" 67108864 "size"
    info "big64-sha256 $src"
    info "big64-write-secs $((t1 - t0))"
    info "big64-read-secs $((t3 - t2))"
}

chk_portmap() {
    # Exactly the Helm chart's default StorageClass mountOptions, plus the addresses that
    # mount.nfs would add on a node. No port options: the kernel asks the portmapper on 111
    # for the MOUNT and NFS ports.
    [ -n "$KT_CHART_MOUNT_OPTIONS" ] || { echo "no chart mount options"; return 1; }
    info "chart-mount-options $KT_CHART_MOUNT_OPTIONS"
    # Without nolock the kernel's lock manager starts and registers with rpcbind, as on any
    # node: run the node's daemons first.
    case ",$KT_CHART_MOUNT_OPTIONS," in *,nolock,*) ;; *) lock_daemons ;; esac
    mkdir -p /mnt3
    mount -t nfs -o "$KT_CHART_MOUNT_OPTIONS,addr=$SRV,mountaddr=$SRV" "$SRV:$KT_NFS_PATH" /mnt3
    ls /mnt3/kt > /dev/null
    printf chart > /mnt3/kt/chart-options
    eq "$(cat $VW/chart-options)" chart "written through the chart's options"
    umount /mnt3
}

chk_nonroot() {
    host_bind
    D=${W##*/}
    printf secret > $W/secret
    chmod 0600 $W/secret
    printf public > $W/public
    chmod 0644 $W/public
    mkdir -p $W/rootdir
    chmod 0755 $W/rootdir
    as_user="chroot /host /usr/bin/setpriv --reuid 1000 --regid 1000 --clear-groups"
    # Positive control: the same user can read a world-readable file.
    eq "$($as_user cat /tmp/nfs/$D/public)" public "uid 1000 reading a 0644 file"
    if out=$($as_user cat /tmp/nfs/$D/secret 2>&1); then fail "uid 1000 read a 0600 root file: $out"; fi
    echo "$out" | grep -q 'Permission denied' || fail "want EACCES, got: $out"
    if out=$($as_user sh -c "echo x > /tmp/nfs/$D/rootdir/x" 2>&1); then
        fail "uid 1000 created a file in a 0755 root directory"
    fi
    echo "$out" | grep -q 'Permission denied' || fail "want EACCES on create, got: $out"
    [ ! -e $VW/rootdir/x ] || fail "denied create left a file behind"
}

chk_fsx() {
    host_bind
    cp /kt/fsx.toml /host/tmp/fsx.toml
    mkdir -p /host/tmp/fsx-artifacts
    # The v4 pass runs a third of the operations: its data path is also checked by v4-restart
    # and pjdfstest, and the whole run must stay within CI's time.
    ops=$KT_FSX_OPS
    [ "$FSTYPE" = nfs4 ] && ops=$((KT_FSX_OPS / 3))
    chroot /host env TZ=UTC "$KT_FSX" -f /tmp/fsx.toml -N "$ops" -S "$KT_FSX_SEED" \
        -P /tmp/fsx-artifacts "/tmp/nfs/${W##*/}/fsx.file"
    info "fsx-ops $ops seed $KT_FSX_SEED"
}

chk_pjdfstest() {
    host_bind
    # Each protocol has its own list of expected failures.
    cp /kt/pjdfstest-$FSTYPE.toml /host/tmp/pjdfstest.toml
    mkdir -p $W/pjd
    chmod 0755 $W/pjd
    rc=0
    # -s: a second file system (the guest's tmpfs) for the EXDEV cases of link and rename.
    mkdir -p /host/tmp/pjd-second
    (cd /host && chroot /host env NO_COLOR=1 TZ=UTC "$KT_PJDFSTEST" -c /tmp/pjdfstest.toml \
        -p "/tmp/nfs/${W##*/}/pjd" -s /tmp/pjd-second) > /tmp/pjd.out 2>&1 || rc=$?
    cat /tmp/pjd.out
    grep -E ' (FAILED|PASSED UNEXPECTEDLY)$' /tmp/pjd.out | awk '{print "pjdfstest-failed " $1 " " $2 $3}' \
        >> "/tmp/kt-$CHECK.info" || true
    # Repeat the failures with their assertion messages where run.sh's excerpt shows them.
    grep -A3 -E ' (FAILED|PASSED UNEXPECTEDLY)$' /tmp/pjd.out || true
    summary=$(grep '^Summary' /tmp/pjd.out || echo "no summary")
    info "pjdfstest-summary $summary"
    [ $rc -eq 0 ] || fail "pjdfstest exited $rc: $summary"
}

chk_restart() {
    # timeo=10 (1 s) so the client notices the dead server quickly; default hard mount, so
    # requests are retried until the server is back and the application sees no error.
    R=/mnt4$FSTYPE
    mkdir -p $R
    nfs_mount $R timeo=10
    [ -f /tmp/r64 ] || dd if=/dev/urandom of=/tmp/r64 bs=1M count=64 2>/dev/null
    src=$(sha /tmp/r64)
    # kt for v3, kt4 for v4: each protocol's run keeps its own file.
    D=$R/${W##*/}
    mkdir -p $D
    printf 'keep me\n' > $D/keep
    exec 3< $D/keep
    t0=$(date +%s)
    (dd if=/tmp/r64 of=$D/restart64 bs=1M && sync) &
    dd_pid=$!
    # run.sh watches the export directory for this and kills the server with SIGKILL.
    touch $R/.kt-$CHECK-go
    wait $dd_pid || fail "the write failed across the restart (rc $?)"
    t1=$(date +%s)
    touch $R/.kt-$CHECK-done
    info "$CHECK-write-secs $((t1 - t0))"
    info "$CHECK-sha256 $src"
    drop_caches
    eq "$(sha $D/restart64)" "$src" "checksum of the file written across the restart"
    # The fd opened before the restart: its file handle must still resolve (no ESTALE).
    read -r line <&3 || fail "read from the fd opened before the restart failed"
    eq "$line" "keep me" "content read from the fd opened before the restart"
    stat $D/keep > /dev/null
    exec 3<&-
    umount $R
}

# The guest's own rpcbind and rpc.statd, run from the host's root: the kernel's lock manager
# registers with rpcbind and asks statd to monitor the server (SM_MON) before its first lock.
lock_daemons() {
    host_bind
    is_mounted /host/run || mount -t tmpfs tmpfs /host/run
    is_mounted /host/var/lib/nfs || mount -t tmpfs tmpfs /host/var/lib/nfs
    mkdir -p /host/run/rpcbind /host/var/lib/nfs/sm /host/var/lib/nfs/sm.bak
    hostname kt-guest
    if ! pidof rpcbind > /dev/null; then chroot /host /sbin/rpcbind -w; fi
    if ! pidof rpc.statd > /dev/null; then chroot /host /usr/sbin/rpc.statd --no-notify; fi
    i=0
    until chroot /host /usr/sbin/rpcinfo -p 127.0.0.1 2>/dev/null | grep -q status; do
        i=$((i + 1))
        [ $i -lt 100 ] || fail "rpc.statd did not register with rpcbind"
        sleep 0.1
    done
}

# fcntl() byte-range locks over NLM: a mount without nolock; one process holds an exclusive
# lock, a second process's F_SETLK must fail with EAGAIN, and succeed once the first lets go.
# The kernel settles conflicts between its own processes locally, so run.sh also asks the
# server, as another host, while the lock is held (nlm_probe.py; reported as nlm-server-side).
chk_nlm_fcntl() {
    lock_daemons
    L=/mnt5
    mkdir -p $L
    mount -t nfs -o "$(echo "$OPTS" | sed 's/,nolock//')" "$SRV:$KT_NFS_PATH" $L
    mkdir -p $L/kt
    printf 'locked data\n' > $L/kt/lockfile
    mkdir -p /host/tmp/lk
    is_mounted /host/tmp/lk || mount --bind $L /host/tmp/lk
    rm -f /host/tmp/lk-held /host/tmp/lk-release
    chroot /host /usr/bin/python3 -c '
import fcntl, os, time
f = open("/tmp/lk/kt/lockfile", "r+")
fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 0, 0)
open("/tmp/lk-held", "w").close()
while not os.path.exists("/tmp/lk-release"):
    time.sleep(0.1)
' &
    holder=$!
    i=0
    until [ -e /host/tmp/lk-held ]; do
        kill -0 $holder 2>/dev/null || fail "the first process could not take the lock"
        i=$((i + 1))
        [ $i -lt 300 ] || fail "the first process did not take the lock within 30 s"
        sleep 0.1
    done
    # Tell run.sh the lock is held; it probes the server as another host, then says so.
    rm -f $L/.kt-nlm-probed
    touch $L/.kt-nlm-held
    i=0
    until [ -e $V/.kt-nlm-probed ]; do
        i=$((i + 1))
        [ $i -lt 300 ] || fail "run.sh did not probe the server within 30 s"
        sleep 0.1
    done
    try_lock='
import errno, fcntl, sys
f = open("/tmp/lk/kt/lockfile", "r+")
try:
    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 0, 0)
except OSError as e:
    print("F_SETLK:", errno.errorcode.get(e.errno, e.errno))
    sys.exit(0 if e.errno == errno.EAGAIN else 2)
print("F_SETLK: granted")
sys.exit(1)
'
    rc=0
    chroot /host /usr/bin/python3 -c "$try_lock" || rc=$?
    [ $rc -eq 0 ] || fail "second process: want EAGAIN while the lock is held (rc $rc)"
    # A shared lock on another range does not conflict.
    chroot /host /usr/bin/python3 -c '
import fcntl
f = open("/tmp/lk/kt/lockfile", "r")
fcntl.lockf(f, fcntl.LOCK_SH | fcntl.LOCK_NB, 0, 0)
' && fail "a shared lock over an exclusively locked file was granted"
    touch /host/tmp/lk-release
    wait $holder || fail "the lock holder failed"
    # Released on close: now the second process gets it.
    rc=0
    chroot /host /usr/bin/python3 -c "$try_lock" || rc=$?
    [ $rc -eq 1 ] || fail "after the holder exited, the lock was still refused (rc $rc)"
    umount /host/tmp/lk
    umount $L
}

# A volume with a size (run.sh: `volume add sized --size 16Mi`, sized4 for v4): df shows the
# size, dd past it fails with "Disk quota exceeded" and the volume's other file stays intact,
# rm gives the space back, and growing the volume on the host (`volume resize`, what the
# provisioner does for a claim that grows) shows in the same mount, which can then write more.
chk_quota() {
    Q=/mnt-$CHECK
    QV=sized
    case $CHECK in v4-*) QV=sized4 ;; esac
    mkdir -p $Q
    mount -t $FSTYPE -o "$OPTS" "$SRV:/export/$QV" $Q
    eq "$(df_kib $Q 2)" 16384 "df size (KiB) of the 16 MiB volume"
    printf 'keep me\n' > $Q/keep
    sync
    if dd if=/dev/zero of=$Q/fill bs=1M count=32 conv=fsync 2> /tmp/quota-dd.err; then
        fail "32 MiB written into a 16 MiB volume"
    fi
    cat /tmp/quota-dd.err
    grep -q "Disk quota exceeded" /tmp/quota-dd.err || fail "dd did not report EDQUOT"
    # What landed is what the file allocates on the server (its size may be larger: the
    # client sends several WRITEs at once, and one past a refused one leaves a hole).
    drop_caches
    landed=$(($(stat -c %b $Q/fill) * 512))
    info "$CHECK-landed-bytes $landed"
    [ "$landed" -le $(((16 << 20) + (64 << 10))) ] || fail "$landed bytes landed in a 16 MiB volume"
    eq "$(cat $Q/keep)" "keep me" "the volume's other file"
    rm $Q/fill
    avail=$(df_kib $Q 4)
    [ "$avail" -gt 12000 ] || fail "space not given back after rm: $avail KiB available"
    # Grown on the host while mounted: no remount.
    touch $V/.kt-$CHECK-resize
    wait_file $V/.kt-$CHECK-resized 300
    [ -e $V/.kt-$CHECK-resized ] || fail "the host did not resize the volume"
    wait_size $Q 49152
    eq "$(df_kib $Q 2)" 49152 "df size (KiB) after growing to 48 MiB"
    dd if=/dev/zero of=$Q/more bs=1M count=32 conv=fsync || fail "32 MiB after growing to 48 MiB"
    rm $Q/more $Q/keep
    # Two writers at once: together they pass the size by at most one WRITE (wsize) each.
    wsize=$(grep " $Q " /proc/mounts | sed 's/.*wsize=\([0-9]*\).*/\1/')
    dd if=/dev/zero of=$Q/w1 bs=1M count=40 conv=fsync 2> /tmp/quota-w1.err &
    p1=$!
    dd if=/dev/zero of=$Q/w2 bs=1M count=40 conv=fsync 2> /tmp/quota-w2.err &
    p2=$!
    r1=0
    wait $p1 || r1=$?
    r2=0
    wait $p2 || r2=$?
    cat /tmp/quota-w1.err /tmp/quota-w2.err
    [ $r1 -ne 0 ] || [ $r2 -ne 0 ] || fail "two writers put 80 MiB into a 48 MiB volume"
    drop_caches
    both=$((($(stat -c %b $Q/w1) + $(stat -c %b $Q/w2)) * 512))
    info "$CHECK-two-writers-bytes $both wsize $wsize"
    [ "$both" -le $(((48 << 20) + 2 * wsize)) ] || fail "two writers landed $both bytes in 48 MiB"
    [ "$both" -ge $((40 << 20)) ] || fail "two writers landed only $both bytes in 48 MiB"
    rm $Q/w1 $Q/w2
    umount $Q
}

# A claim that grows through the Kubernetes API: run.sh runs the API stand-in
# (examples/standin-cluster.rs) with a 16Mi claim, which the server provisioned through it.
# The guest mounts that volume; df shows 16 MiB and dd past it fails; the claim's request is
# raised to 48Mi in the API, the server expands the volume, the PV and the claim's status, and
# the same mount shows 48 MiB and writes 24 MiB more, without a remount.
chk_expand() {
    wait_file $V/.kt-expand-path 600
    [ -e $V/.kt-expand-path ] || fail "no claim was provisioned through the API stand-in"
    E=/mnt-expand
    mkdir -p $E
    mount -t $FSTYPE -o "$OPTS" "$SRV:$(cat $V/.kt-expand-path)" $E
    eq "$(df_kib $E 2)" 16384 "df size (KiB) of the 16Mi claim"
    if dd if=/dev/zero of=$E/fill bs=1M count=32 conv=fsync 2> /tmp/expand-dd.err; then
        fail "32 MiB written into a 16Mi claim"
    fi
    grep -q "Disk quota exceeded" /tmp/expand-dd.err || fail "dd did not report EDQUOT"
    touch $V/.kt-expand-grow
    wait_file $V/.kt-expand-grown 600
    [ -e $V/.kt-expand-grown ] || fail "the API stand-in did not report the claim grown"
    cat $V/.kt-expand-grown
    grep -q "claim_status_48Mi=true" $V/.kt-expand-grown || fail "claim status.capacity not 48Mi"
    grep -q 'pv_capacity="48Mi"' $V/.kt-expand-grown || fail "PV capacity not 48Mi"
    grep -q "VolumeResizeSuccessful" $V/.kt-expand-grown || fail "no VolumeResizeSuccessful Event"
    wait_size $E 49152
    eq "$(df_kib $E 2)" 49152 "df size (KiB) after the claim grew"
    dd if=/dev/zero of=$E/more bs=1M count=24 conv=fsync || fail "24 MiB more after the claim grew"
    rm $E/fill $E/more
    umount $E
}

# Kernel project quotas (run.sh passes the server binary as KT_SERVER): our server runs in the
# guest on a loop-mounted ext4 with project quotas on (the host kernel may have no quota
# support), reports that mode, and gives its volume a project and hard limit. Over NFS, dd past
# the size fails with "Disk quota exceeded". The kernel holds the server's own writes to the
# size: with the server not recounting, a local user fills most of the volume beside it and a
# root client's write that the server's count lets through is refused by the kernel. A local
# user is stopped at the size too; the server's recount shows what that user wrote in df over
# NFS; after kill -9 and a restart the usage is the kernel's; `volume resize` raises the
# kernel's limit.
chk_prjquota() {
    [ -n "$KT_SERVER" ] || fail "no server binary in the config"
    host_setup
    P=/tmp/pq
    K=/host$P/export/kq
    S="chroot /host $KT_SERVER"
    as_user="chroot /host /usr/bin/setpriv --reuid 1000 --regid 1000 --clear-groups"
    alloc_kib() { echo $(($(stat -c %b "$1") / 2)); }
    mkdir -p /host$P /mnt-pq
    chroot /host /sbin/mkfs.ext4 -q -F -I 256 -O quota,project /tmp/pq.img 96M
    chroot /host /usr/bin/mount -o loop,prjquota /tmp/pq.img $P
    trap pq_cleanup EXIT
    $S volume add kq --size 8Mi --export-root $P/export
    # Files from before the volume joined its project: a 1 MiB file, a symbolic link, a FIFO.
    dd if=/dev/zero of=$K/old bs=1M count=1 conv=fsync
    ln -s old $K/oldlink
    mkfifo $K/oldfifo
    pq_serve 0
    grep -q 'volume_sizes=kernel project quotas (ext4)' /tmp/pq-server.log ||
        fail "the server does not report kernel project quotas"
    $S volume list --export-root $P/export | tee /tmp/pq-list
    grep -q 'enforced by kernel project quotas (ext4)' /tmp/pq-list || fail "volume list: mode"
    mount -t nfs4 -o vers=4.1,port=12049,addr=127.0.0.1,clientaddr=127.0.0.1 127.0.0.1:/export/kq /mnt-pq
    eq "$(df_kib /mnt-pq 2)" 8192 "df size (KiB) of the 8 MiB volume"
    # They joined the project: the file counts, and the link and FIFO (recreated in place) can
    # be renamed inside the volume; left outside, rename(2) would fail with EXDEV.
    [ "$(df_kib /mnt-pq 3)" -ge 1024 ] || fail "the file from before does not count: $(df_kib /mnt-pq 3) KiB used"
    eq "$(readlink /mnt-pq/oldlink)" old "the symbolic link's target"
    chroot /host /usr/bin/python3 -c 'import os, sys
for n in ("oldlink", "oldfifo", "old"):
    os.rename(sys.argv[1] + "/" + n, sys.argv[1] + "/" + n + "2")' $P/export/kq
    eq "$(readlink /mnt-pq/oldlink2)" old "the renamed link's target"
    rm /mnt-pq/old2 /mnt-pq/oldlink2 /mnt-pq/oldfifo2
    if dd if=/dev/zero of=/mnt-pq/fill bs=1M count=16 conv=fsync 2> /tmp/pq-dd.err; then
        fail "16 MiB written over NFS into an 8 MiB volume"
    fi
    cat /tmp/pq-dd.err
    grep -q "Disk quota exceeded" /tmp/pq-dd.err || fail "dd over NFS did not report EDQUOT"
    rm /mnt-pq/fill
    # The server (no recount now) does not know of 6 MiB a local user writes beside it, so
    # its count lets a root client write 4 MiB: the kernel must refuse what passes the size.
    $as_user dd if=/dev/zero of=$P/export/kq/beside bs=1M count=6 conv=fsync
    if dd if=/dev/zero of=/mnt-pq/root bs=1M count=4 conv=fsync 2> /tmp/pq-root.err; then
        fail "the server wrote past the size for a root client: the kernel did not hold it"
    fi
    cat /tmp/pq-root.err
    grep -q "Disk quota exceeded" /tmp/pq-root.err || fail "the root client's write did not get EDQUOT"
    total=$(($(alloc_kib $K/beside) + $(alloc_kib $K/root)))
    info "prjquota-kernel-held-kib $total"
    [ "$total" -le 8192 ] || fail "$total KiB in the 8 MiB project"
    rm /mnt-pq/root $K/beside
    # A local user alone is stopped at the size.
    if $as_user dd if=/dev/zero of=$P/export/kq/direct bs=1M count=16 conv=fsync 2> /tmp/pq-direct.err; then
        fail "the kernel let 16 MiB into the 8 MiB project"
    fi
    cat /tmp/pq-direct.err
    grep -q "Disk quota exceeded" /tmp/pq-direct.err || fail "the local write did not get EDQUOT"
    direct_kib=$(alloc_kib $K/direct)
    [ "$direct_kib" -gt 4096 ] && [ "$direct_kib" -le 8192 ] || fail "$direct_kib KiB landed locally"
    # Restarted with a recount every second: usage comes from the kernel, at start and after.
    pq_kill
    pq_serve 1
    # The client rounds free space up to its block size (wsize, 1 MiB): used may show up to
    # 1 MiB less than the kernel's count.
    want_kib=$((direct_kib - 1024))
    used=$(df_kib /mnt-pq 3)
    [ "$used" -ge "$want_kib" ] || fail "df after a restart shows $used KiB used, the kernel $direct_kib"
    info "prjquota-used-kib $used"
    rm $K/direct
    $as_user dd if=/dev/zero of=$P/export/kq/direct bs=1M count=5 conv=fsync
    i=0
    while [ "$(df_kib /mnt-pq 3)" -lt 4096 ] && [ $i -lt 50 ]; do
        sleep 0.2
        i=$((i + 1))
    done
    [ "$(df_kib /mnt-pq 3)" -ge 4096 ] || fail "the recount did not show 5 MiB written beside the server: $(df_kib /mnt-pq 3) KiB"
    # Growing the volume raises the kernel's limit: the local user can now write 16 MiB more.
    $S volume resize kq --size 32Mi --export-root $P/export
    wait_size /mnt-pq 32768
    eq "$(df_kib /mnt-pq 2)" 32768 "df size (KiB) after growing to 32 MiB"
    $as_user dd if=/dev/zero of=$P/export/kq/more bs=1M count=16 conv=fsync ||
        fail "16 MiB locally after growing to 32 MiB"
}

# pq_serve RECOUNT_SECONDS: starts the guest's own server for prjquota (PQ_PID) and waits
# until it serves.
pq_serve() {
    RUST_LOG=info chroot /host "$KT_SERVER" serve --export-root $P/export --bind 127.0.0.1 \
        --nfs-port 12049 --mount-port 12048 --portmap-port 0 --http-port 0 --nlm-port 0 \
        --statd-port 0 --no-controller --recount-interval "$1" >> /tmp/pq-server.log 2>&1 &
    PQ_PID=$!
    i=0
    until [ "$(grep -c 'serving NFSv3' /tmp/pq-server.log)" -gt "${PQ_STARTS:-0}" ]; do
        kill -0 "$PQ_PID" 2>/dev/null || fail "the server exited"
        [ $i -lt 300 ] || fail "the server did not start"
        sleep 0.1
        i=$((i + 1))
    done
    PQ_STARTS=$(grep -c 'serving NFSv3' /tmp/pq-server.log)
}

pq_kill() {
    kill -9 "$PQ_PID" 2>/dev/null || true
    wait "$PQ_PID" 2>/dev/null || true
}

# Leaves nothing behind, whether prjquota passed or failed; shows the server's last words.
pq_cleanup() {
    echo "--- prjquota server log (last 15 lines)"
    tail -n 15 /tmp/pq-server.log 2>/dev/null || true
    umount -f /mnt-pq 2>/dev/null || true
    pq_kill
    umount /host$P 2>/dev/null || true
}

chk_umount() {
    host_unbind
    umount $V
    umount $M
    ! is_mounted $M || fail "still mounted"
}

# Extended attributes (NFSv4.2 only, RFC 8276): a user. attribute set, replaced, listed and
# removed through the mount with host python3, read back through the noac mount (so from the
# server); XATTR_CREATE/XATTR_REPLACE keep their meaning; uid 1000 may read but not change
# attributes of a root-owned 0644 file.
chk_xattr() {
    host_bind
    mkdir -p /host/tmp/nfs2
    is_mounted /host/tmp/nfs2 || mount --bind $V /host/tmp/nfs2
    D=${W##*/}
    mkdir -p $W
    : > $W/xattr
    chmod 0644 $W/xattr
    py="chroot /host /usr/bin/python3 -c"
    $py 'import errno, os, sys, time
p, v = sys.argv[1], sys.argv[2]
def refused(f, code):
    try:
        f()
    except OSError as e:
        assert e.errno == code, e
    else:
        sys.exit("succeeded: %r" % f)
os.setxattr(p, "user.kt", b"value 1")
assert os.getxattr(p, "user.kt") == b"value 1"
assert os.getxattr(v, "user.kt") == b"value 1", "through the noac mount"
refused(lambda: os.setxattr(p, "user.kt", b"x", os.XATTR_CREATE), errno.EEXIST)
refused(lambda: os.setxattr(p, "user.none", b"x", os.XATTR_REPLACE), errno.ENODATA)
time.sleep(0.1)
big = bytes(range(256)) * 8
os.setxattr(p, "user.kt", big, os.XATTR_REPLACE)
os.setxattr(p, "user.other", b"2", os.XATTR_CREATE)
assert os.getxattr(v, "user.kt") == big, "the replaced value from the server"
assert sorted(n for n in os.listxattr(v) if n.startswith("user.")) == ["user.kt", "user.other"], os.listxattr(v)
refused(lambda: os.getxattr(p, "user.missing"), errno.ENODATA)
time.sleep(0.1)
os.removexattr(p, "user.kt")
refused(lambda: os.removexattr(p, "user.kt"), errno.ENODATA)
refused(lambda: os.getxattr(v, "user.kt"), errno.ENODATA)
assert [n for n in os.listxattr(v) if n.startswith("user.")] == ["user.other"], os.listxattr(v)
' /tmp/nfs/$D/xattr /tmp/nfs2/$D/xattr
    as_user="chroot /host /usr/bin/setpriv --reuid 1000 --regid 1000 --clear-groups"
    eq "$($as_user /usr/bin/python3 -c 'import os, sys; print(os.getxattr(sys.argv[1], "user.other").decode())' /tmp/nfs/$D/xattr)" 2 "uid 1000 reading"
    if out=$($as_user /usr/bin/python3 -c 'import os, sys; os.setxattr(sys.argv[1], "user.mine", b"x")' /tmp/nfs/$D/xattr 2>&1); then
        fail "uid 1000 set an attribute of a root 0644 file"
    fi
    echo "$out" | grep -q 'Permission denied' || fail "want EACCES, got: $out"
    umount /host/tmp/nfs2
    host_unbind
}

# The NFSv4 mount as a node mounts it: mount.nfs with no options negotiates the version
# (4.2, else 4.1, ...), then the suite's own v4 mounts.
chk_default_mount() {
    host_setup
    mkdir -p /host/tmp/v4default
    chroot /host /usr/sbin/mount.nfs "$SRV:$KT_NFS_PATH" /tmp/v4default
    opts=$(grep " /host/tmp/v4default " /proc/mounts)
    echo "$opts"
    case "$opts" in
    *" nfs4 "*vers=4.2*|*" nfs4 "*vers=4.1*) ;;
    *) fail "negotiated something else than NFSv4.1/4.2: $opts" ;;
    esac
    info "default-mount $(echo "$opts" | grep -o 'vers=[0-9.]*')"
    printf 'default options\n' > /host/tmp/v4default/default-options
    eq "$(cat /host/tmp/v4default/default-options)" "default options" "read back"
    rm /host/tmp/v4default/default-options
    umount /host/tmp/v4default
}

# fcntl (POSIX) and flock locks between two processes of the guest on the v4 mount; the
# server's /metrics must count the lock while it is held.
chk_lock() {
    host_bind
    : > $W/lockf
    py="chroot /host python3 /tmp/kt-lock.py"
    cp /kt/lock.py /host/tmp/kt-lock.py
    # Holder: takes the lock, reports, holds it until /tmp/kt-release exists.
    rm -f /host/tmp/kt-held /host/tmp/kt-release
    $py hold /tmp/nfs/$D/lockf /tmp/kt-held /tmp/kt-release &
    holder=$!
    i=0
    while [ ! -e /host/tmp/kt-held ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e /host/tmp/kt-held ] || fail "the holder never got its lock"
    # The server's gauge is refreshed every second.
    i=0
    held=
    while [ $i -lt 50 ]; do
        held=$(wget -qO- http://$SRV:8080/metrics | grep '^nfs_locks_held ' | cut -d' ' -f2)
        [ "$held" = 1 ] && break
        sleep 0.2
        i=$((i + 1))
    done
    eq "$held" 1 "locks the server holds"
    eq "$($py try /tmp/nfs/$D/lockf)" denied "a second process's fcntl lock"
    touch /host/tmp/kt-release
    wait $holder
    eq "$($py try /tmp/nfs/$D/lockf)" granted "fcntl lock after the holder let go"
    # flock(2): emulated with whole-file locks, so two processes conflict too (util-linux
    # flock from the host root; busybox has none).
    fl="chroot /host flock"
    rm -f /host/tmp/flocked
    $fl -x /tmp/nfs/$D/lockf -c 'touch /tmp/flocked; sleep 6' &
    flpid=$!
    i=0
    while [ ! -e /host/tmp/flocked ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e /host/tmp/flocked ] || fail "the first flock was never granted"
    if $fl -x -n /tmp/nfs/$D/lockf true; then fail "a second flock was granted"; fi
    wait $flpid
    $fl -x -n /tmp/nfs/$D/lockf true || fail "flock after release"
}

# A lock held across kill -9 + restart of the server: reclaimed by its holder, refused to
# another process meanwhile; and the time from the server being back to the guest's next
# successful write.
chk_lock_restart() {
    host_bind
    py="chroot /host python3 /tmp/kt-lock.py"
    cp /kt/lock.py /host/tmp/kt-lock.py
    : > $W/lockr
    rm -f /host/tmp/kt-held /host/tmp/kt-release
    $py hold /tmp/nfs/$D/lockr /tmp/kt-held /tmp/kt-release &
    holder=$!
    i=0
    while [ ! -e /host/tmp/kt-held ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e /host/tmp/kt-held ] || fail "the holder never got its lock"
    # A writer that keeps writing small synced files: run.sh times the first one that reaches
    # the server after the restart.
    (i=0; while [ ! -e /tmp/kt-stop-ticks ]; do
        echo $i > $W/tick.new && mv $W/tick.new $W/tick; i=$((i + 1)); sleep 0.2
    done) &
    ticker=$!
    touch $M/.kt-$CHECK-go
    # run.sh kills the server and starts it again; wait until it says so.
    i=0
    # Through the noac view, which asks the server every time.
    while [ ! -e $V/.kt-$CHECK-back ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i + 1)); done
    [ -e $V/.kt-$CHECK-back ] || fail "the server did not come back"
    eq "$($py try /tmp/nfs/$D/lockr)" denied "another process's lock while the holder reclaims"
    touch /tmp/kt-stop-ticks
    wait $ticker || true
    touch /host/tmp/kt-release
    wait $holder || fail "the holder lost its lock across the restart"
    eq "$($py try /tmp/nfs/$D/lockr)" granted "the lock after the holder let go"
    touch $M/.kt-$CHECK-done
}

"chk_$(echo "$FN" | tr - _)"
