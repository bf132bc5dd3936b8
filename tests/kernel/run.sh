#!/usr/bin/env bash
# Linux kernel NFSv3 client against our server, in a QEMU (TCG) guest.
#
#   tests/kernel/run.sh SERVER_BINARY     test nfs-server-provisioner
#   tests/kernel/run.sh --ganesha         test NFS-Ganesha instead (validates the harness itself)
#
# Runs as root on Debian 12, installs what it needs, caches the kernel, initramfs and tools under
# target/kernel-cache and target/tools. The server, QEMU and its socat forwarders run in a private
# network + mount namespace, so the standard ports (111, 2049, 20048) clash with nothing and no
# traffic leaves the machine: the guest reaches the server only through QEMU's user-mode network
# (guestfwd 10.0.2.100:PORT -> 127.0.0.1:PORT inside the namespace).
#
# Environment:
#   KT_CHECKS="mount write ..."  run only these guest checks (most need mount, some need earlier ones)
#   KT_RUST_LOG=FILTER           the server's log filter (default info, NLM at debug)
#   KT_TIMEOUT=720               seconds before the guest is killed
#   KT_FSX_OPS=1200 KT_FSX_SEED=1     fsx operations on v3 (a third on v4)
#   KT_TOOLS_CACHE=DIR           where pjdfstest and fsx are kept between clones
#   KT_PCAP=1                    capture the RPC traffic to target/kernel-cache/run/nfs.pcap (tcpdump)
#   KT_GANESHA_GRACE=1           with --ganesha: keep Ganesha's default NFSv4 grace period (the
#                                harness otherwise runs it Graceless), to compare restart stalls
#
# Prints one PASS/FAIL line per check and last `kernel: N passed, M failed`; exits 1 on any failure.
# The guest console is kept in target/kernel-cache/last-console.log, the server's output in
# target/kernel-cache/run/server.log.
#
# Everything is in functions and `main` runs last: bash reads a script as it runs, so editing this
# file during a run cannot derail the run.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(git -C "$HERE" rev-parse --show-toplevel)
CACHE=$REPO/target/kernel-cache
TOOLS=$REPO/target/tools
RUN=$CACHE/run
# Guest checks in the order they run; later ones build on files earlier ones made.
ALL_CHECKS="mount mkdir write read append rename symlink hardlink chmod chown truncate utimes
            mkfifo readdir-2000 unlink big64 portmap nonroot nlm-fcntl quota expand fsx pjdfstest restart umount
            default-mount v4-mount v4-mkdir v4-write v4-read v4-append v4-rename v4-symlink
            v4-hardlink v4-chmod v4-chown v4-truncate v4-utimes v4-mkfifo v4-unlink v4-nonroot v4-xattr
            v4-quota prjquota v4-fsx v4-pjdfstest v4-lock v4-restart v4-lock-restart v4-umount
            v41-mount v41-mkdir v41-write v41-read v41-rename v41-lock v41-umount
            v40-mount v40-mkdir v40-write v40-read v40-append v40-rename v40-symlink v40-hardlink
            v40-truncate v40-unlink v40-nonroot v40-lock v40-lock-restart v40-umount"
VOL=vol
PORTS="2049 20048 111"
# Our metrics endpoint (the v4-lock check reads nfs_locks_held there).
HTTP_PORT=8080
# Our lock manager (NLM): forwarded too, so mounts without nolock can lock.
NLM_PORT=32803

log() { echo "kernel-test: $*" >&2; }

# ================================================================================================
# Inside the private namespaces: the server (restarted on cue) and the guest.
# ================================================================================================

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_ports PORT...: up to 30 s for each to accept connections.
wait_ports() {
    local p i
    for p in "$@"; do
        for i in $(seq 1 300); do
            port_open "$p" && continue 2
            sleep 0.1
        done
        return 1
    done
}

SERVER_PID=
start_server() {
    if [[ $SERVER_KIND == ganesha ]]; then
        ganesha.nfsd -F -f "$RUN/ganesha.conf" -L "$RUN/ganesha.log" -p /run/ganesha/ganesha.pid \
            >> "$RUN/server.log" 2>&1 &
    else
        # NLM at debug level: the nlm-fcntl check looks for the guest's granted LOCK in the log.
        # With the API stand-in (expand check) the server provisions through it.
        local kube=(--no-controller)
        if [[ -e $RUN/kubeconfig ]]; then
            kube=(--kubeconfig "$RUN/kubeconfig" --leader-elect=false --server-address "10.0.2.100")
        fi
        RUST_LOG=${KT_RUST_LOG:-info,nfs_server::nlm=debug} "$SERVER_BIN" serve --export-root "$RUN/export" \
            --bind 127.0.0.1 --nfs-port 2049 --mount-port 20048 --portmap-port 111 \
            --http-port "$HTTP_PORT" --nlm-port "$NLM_PORT" --grace-period 90 "${kube[@]}" \
            >> "$RUN/server.log" 2>&1 &
    fi
    SERVER_PID=$!
    # shellcheck disable=SC2086
    wait_ports $PORTS
}

# The restart tests: when the guest's check TAG signals (.kt-TAG-go in the export), SIGKILL the
# server, start it again 2 s later, tell the guest (.kt-TAG-back), and time how long until the
# guest's check is done, and until the guest's next write reached the server (kt4/tick).
cue_restart() {
    local tag=$1 dir=$RUN/export/$VOL
    local sub=kt4
    case $tag in v40-*) sub=kt40 ;; v41-*) sub=kt41 ;; esac
    local go=$dir/.kt-$tag-go done=$dir/.kt-$tag-done tick=$dir/$sub/tick
    while [[ ! -e $go && ! -e $RUN/stop ]]; do sleep 0.1; done
    [[ -e $go ]] || return 0
    # Let the guest's I/O get going, then kill the server mid-stream.
    sleep 1
    local before=no ok=yes t0 t1 resume=none
    [[ -e $done ]] && before=yes
    kill -9 "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    echo "=== $(date +%T.%N) server killed with SIGKILL ($tag)" >> "$RUN/server.log"
    sleep 2
    t0=$(date +%s.%N)
    start_server || ok=no
    echo "=== $(date +%T.%N) server restarted (listening: $ok)" >> "$RUN/server.log"
    touch "$dir/.kt-$tag-back"
    if [[ $tag == *lock* ]]; then
        local i m
        for i in $(seq 1 1200); do
            m=$(stat -c %.9Y "$tick" 2>/dev/null || echo 0)
            if awk -v a="$m" -v b="$t0" 'BEGIN { exit !(a > b) }'; then
                resume=$(awk -v a="$m" -v b="$t0" 'BEGIN { printf "%.1f", a - b }')
                break
            fi
            [[ -e $RUN/stop ]] && break
            sleep 0.1
        done
    fi
    while [[ ! -e $done && ! -e $RUN/stop ]]; do sleep 0.1; done
    t1=$(date +%s.%N)
    {
        echo "done_before_kill=$before"
        echo "restarted=$ok"
        echo "completed=$([[ -e $done ]] && echo yes || echo no)"
        echo "stall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
        echo "resume=$resume"
    } > "$RUN/$tag.result"
}

# The host side of nlm-fcntl: once the guest holds its lock, ask the server as another host
# (nlm_probe.py) whether the file could be locked, and tell the guest it may let go.
nlm_probe_on_cue() {
    local held=$RUN/export/$VOL/.kt-nlm-held
    while [[ ! -e $held && ! -e $RUN/stop ]]; do sleep 0.1; done
    [[ -e $held ]] || return 0
    /usr/bin/python3 "$HERE/nlm_probe.py" "$VOL" kt/lockfile > "$RUN/nlm-probe.result" 2>&1 || true
    touch "$RUN/export/$VOL/.kt-nlm-probed"
}

# The host side of quota / v4-quota: once the guest filled its sized volume, grow it to 48 MiB
# with `volume resize` while the server runs, and tell the guest.
quota_resize_on_cue() {
    local tag=$1 vol=$2 cue=$RUN/export/$VOL/.kt-$1-resize
    while [[ ! -e $cue && ! -e $RUN/stop ]]; do sleep 0.1; done
    [[ -e $cue ]] || return 0
    "$SERVER_BIN" volume resize "$vol" --size 48Mi --export-root "$RUN/export" \
        >> "$RUN/volume-add.log" 2>&1 || true
    touch "$RUN/export/$VOL/.kt-$tag-resized"
}

# Background job that owns the server process, so it can SIGKILL, reap and restart it.
supervise() {
    local rpcbind_pid=
    if [[ $SERVER_KIND == ganesha ]]; then
        mkdir -p /run/ganesha /run/rpcbind
        rpcbind -f -w &
        rpcbind_pid=$!
        wait_ports 111 || { echo "rpcbind did not start" > "$RUN/server.failed"; return; }
    fi
    local standin_pid=
    if [[ " $KT_CHECKS " == *" expand "* && $SERVER_KIND == ours ]]; then
        # The Kubernetes API stand-in with the claim the expand check grows.
        "$STANDIN_BIN" "$RUN/kubeconfig" "$RUN/export/$VOL" >> "$RUN/standin.log" 2>&1 &
        standin_pid=$!
        local i
        for i in $(seq 1 300); do [[ -e $RUN/kubeconfig ]] && break; sleep 0.1; done
    fi
    if ! start_server; then
        echo "the server did not listen on $PORTS within 30 s" > "$RUN/server.failed"
        return
    fi
    touch "$RUN/server.ready"
    if [[ " $KT_CHECKS " == *" nlm-fcntl "* && $SERVER_KIND == ours ]]; then nlm_probe_on_cue & fi
    if [[ " $KT_CHECKS " == *" quota "* ]]; then quota_resize_on_cue quota sized & fi
    if [[ " $KT_CHECKS " == *" v4-quota "* ]]; then quota_resize_on_cue v4-quota sized4 & fi
    local tag
    for tag in restart v4-restart v4-lock-restart v40-lock-restart; do
        if [[ " $KT_CHECKS " == *" $tag "* ]]; then cue_restart "$tag"; fi
    done
    while [[ ! -e $RUN/stop ]]; do sleep 0.2; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    if [[ -n $rpcbind_pid ]]; then kill "$rpcbind_pid" 2>/dev/null || true; fi
    if [[ -n $standin_pid ]]; then kill "$standin_pid" 2>/dev/null || true; fi
}

inner() {
    # rpcbind and ganesha keep sockets and pid files in /run: give them a private one.
    mount -t tmpfs tmpfs /run
    ip link set lo up
    # glibc treats IPv4 as unconfigured for AI_ADDRCONFIG when lo has only 127.0.0.1.
    ip addr add 127.0.0.2/8 dev lo

    # KT_PCAP=1: keep the NFS traffic on the namespace's loopback for a closer look.
    if [[ -n ${KT_PCAP:-} ]]; then
        tcpdump -i lo -s 512 -w "$RUN/nfs.pcap" tcp port 2049 or tcp port 20048 or tcp port 111 \
            2> "$RUN/tcpdump.log" &
        PCAP_PID=$!
        sleep 1
    fi
    supervise &
    SUP_PID=$!
    trap 'touch "$RUN/stop"; wait $SUP_PID 2>/dev/null || true; [[ -z ${PCAP_PID:-} ]] || kill "$PCAP_PID"' EXIT
    while [[ ! -e $RUN/server.ready && ! -e $RUN/server.failed ]]; do sleep 0.1; done
    if [[ -e $RUN/server.failed ]]; then
        log "$(cat "$RUN/server.failed")"
        return 3
    fi

    local fwd="" p rc=0 ports=$PORTS
    if [[ $SERVER_KIND == ours ]]; then ports+=" $NLM_PORT $HTTP_PORT"; fi
    for p in $ports; do
        # cmd: opens a new host connection per guest connection, so reconnects after a server
        # restart work (the plain tcp: form allows only one connection). nodelay: without it
        # Nagle + delayed ACKs stall small RPCs by 40 ms. ",," is an escaped comma for -netdev.
        fwd+=",guestfwd=tcp:10.0.2.100:$p-cmd:socat STDIO TCP4:127.0.0.1:$p,,nodelay"
    done
    timeout -k 10 "$KT_TIMEOUT" qemu-system-x86_64 \
        -accel tcg,thread=multi -cpu max -smp 2 -m 1536 \
        -nodefaults -no-user-config -display none -no-reboot \
        -kernel "$KERNEL" -initrd "$RUN/initrd.gz" \
        -append "console=ttyS0 loglevel=6 panic=-1" \
        -serial "file:$CACHE/last-console.log" -serial "file:$RUN/results.log" \
        -netdev "user,id=n0,restrict=on,ipv6=off$fwd" -device virtio-net-pci,netdev=n0 \
        -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on || rc=$?
    if [[ $rc == 124 || $rc == 137 ]]; then
        log "the guest did not finish within ${KT_TIMEOUT}s and was killed"
    fi
    return "$rc"
}

# ================================================================================================
# Outside: packages, tools, kernel + initramfs, the run, the results.
# ================================================================================================

apt_retry() {
    local i
    for i in $(seq 1 60); do
        if "$@"; then return 0; fi
        log "apt failed or dpkg is locked by another job: retry $i/60 in 5 s"
        sleep 5
    done
    return 1
}

ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [[ ${#missing[@]} == 0 ]] && return 0
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-cache policy "${missing[0]}" 2>/dev/null | grep -q 'Candidate: [0-9]' || apt_retry apt-get update -q
    apt_retry apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# Host-built test programs, run in the guest by chroot into the host root over 9p. Built once
# per machine: kept in $KT_TOOLS_CACHE (default /var/cache/nfs-server-provisioner/tools) for
# later clones.
TOOLS_CACHE=${KT_TOOLS_CACHE:-/var/cache/nfs-server-provisioner/tools}
ensure_tool() {
    local crate=$1 version=$2
    [[ -x $TOOLS/bin/$crate ]] && return 0
    local cached=$TOOLS_CACHE/$crate-$version
    if [[ -x $cached ]]; then
        mkdir -p "$TOOLS/bin"
        cp "$cached" "$TOOLS/bin/$crate"
        return 0
    fi
    command -v cargo > /dev/null || PATH=$HOME/.cargo/bin:$PATH
    log "cargo install $crate $version (two jobs)"
    cargo install "$crate" --version "$version" --locked --root "$TOOLS" -j2 >&2
    { mkdir -p "$TOOLS_CACHE" && cp "$TOOLS/bin/$crate" "$cached.tmp" && mv "$cached.tmp" "$cached"; } ||
        log "cannot keep $crate in $TOOLS_CACHE (built again next time)"
}

# Fresh export directory and the server-specific setup.
prepare_export() {
    rm -rf "$RUN"
    mkdir -p "$RUN/export" "$RUN/extra/kt"
    if [[ $SERVER_KIND == ours ]]; then
        # A private copy: a rebuild of target/release during the run must not change the server
        # that the restart test starts again.
        cp "$SERVER_BIN" "$RUN/nfs-server-provisioner"
        SERVER_BIN=$RUN/nfs-server-provisioner
        if [[ -n $STANDIN_BIN ]]; then
            cp "$STANDIN_BIN" "$RUN/standin-cluster"
            STANDIN_BIN=$RUN/standin-cluster
        fi
        if ! { "$SERVER_BIN" volume add "$VOL" --export-root "$RUN/export" \
            && "$SERVER_BIN" volume add sized --size 16Mi --export-root "$RUN/export" \
            && "$SERVER_BIN" volume add sized4 --size 16Mi --export-root "$RUN/export"; } \
            > "$RUN/volume-add.log" 2>&1; then
            cat "$RUN/volume-add.log" >&2
            log "'volume add' failed"
            return 1
        fi
        return 0
    fi
    mkdir -p "$RUN/export/$VOL"
    chmod 0777 "$RUN/export/$VOL"
    cat > "$RUN/ganesha.conf" <<EOF
NFS_CORE_PARAM {
    Bind_addr = 127.0.0.1;
    NFS_Port = 2049;
    MNT_Port = 20048;
    Protocols = 3, 4;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
    Mount_Path_Pseudo = true;
}
NFSV4 { Graceless = $([[ -n ${KT_GANESHA_GRACE:-} ]] && echo false || echo true); }
EXPORT {
    Export_Id = 1;
    Path = $RUN/export/$VOL;
    Pseudo = /export/$VOL;
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    Protocols = 3, 4;
    FSAL { Name = VFS; }
}
EOF
}

# The per-run part of the initramfs: test scripts and their settings, appended as a second cpio
# (the kernel unpacks concatenated archives in order).
prepare_guest_files() {
    local kt=$RUN/extra/kt
    cp "$HERE/guest/main.sh" "$HERE/guest/checks.sh" "$HERE/guest/lock.py" "$HERE/fsx.toml" "$kt/"
    # pjdfstest: the features the Linux client has, users that exist on the host (the chroot
    # sees the host's /etc/passwd), and each protocol's inherent failures as expected ones.
    local fstype
    for fstype in nfs nfs4; do
        {
            echo '[features]'
            echo 'posix_fallocate = {}'
            echo 'utime_now = {}'
            echo 'utimensat = {}'
            echo 'rename_ctime = {}'
            echo '[settings]'
            echo 'naptime = 0.01'
            echo 'allow_remount = false'
            echo 'expected_failures = ['
            sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' -e 's/.*/  "&",/' \
                "$HERE/pjdfstest-exclusions-$fstype.txt"
            echo ']'
            echo '[dummy_auth]'
            echo 'entries = [["nobody", "nogroup"], ["daemon", "daemon"]]'
        } > "$kt/pjdfstest-$fstype.toml"
    done
    cat > "$kt/config" <<EOF
KT_NFS_PATH=/export/$VOL
KT_ORDER="$(tr -s ' \n' '  ' <<< "$ALL_CHECKS")"
KT_CHECKS="$KT_CHECKS"
KT_PJDFSTEST=$TOOLS/bin/pjdfstest
KT_FSX=$TOOLS/bin/fsx
KT_FSX_OPS=$KT_FSX_OPS
KT_FSX_SEED=$KT_FSX_SEED
KT_CHART_MOUNT_OPTIONS=$(chart_mount_options)
KT_SERVER=$([[ $SERVER_KIND == ours ]] && echo "$SERVER_BIN" || true)
EOF
    (cd "$RUN/extra" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 > "$RUN/extra.cpio.gz"
    cat "$INITRD" "$RUN/extra.cpio.gz" > "$RUN/initrd.gz"
}

# The Helm chart's default StorageClass mountOptions, comma-joined: what nodes mount with.
chart_mount_options() {
    awk '/^  mountOptions:/ {on=1; next} on && /^    - / {sub(/^    - /, ""); printf "%s%s", sep, $0; sep=","; next} on {exit}' \
        "$REPO/deploy/helm/nfs-server-provisioner/values.yaml"
}

PASSED=0
FAILED=0
pass() { echo "PASS $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $*"; FAILED=$((FAILED + 1)); }
# info KEY: a value the guest reported with `KT INFO KEY VALUE`.
info() { sed -n "s/^KT INFO $1 //p" "$RUN/results.txt" | head -1; }
wants() { [[ " $KT_CHECKS " == *" $1 "* ]]; }

# host_checksum NAME FILE: the file as the server stored it must match what the guest wrote.
host_checksum() {
    local name=$1 file=$2 want got=missing
    want=$(info "$name-sha256")
    [[ -f $file ]] && got=$(sha256sum "$file" | cut -c1-64)
    if [[ -n $want && $got == "$want" ]]; then pass "$name-host-checksum"
    else fail "$name-host-checksum: host file $got, guest wrote ${want:-nothing}"; fi
}

report() {
    local vm_rc=$1 elapsed=$2 c line
    echo "--- kernel client checks against ${SERVER_NAME} (guest ran ${elapsed}s)"
    local no_result="no result (guest hung, crashed or timed out: see last-console.log)"
    if [[ -e $RUN/server.failed ]]; then
        fail "server-start: $(cat "$RUN/server.failed")"
        no_result="not run: the server did not start"
    fi
    if [[ -f $RUN/results.log ]]; then tr -d '\r' < "$RUN/results.log" > "$RUN/results.txt"
    else : > "$RUN/results.txt"; fi
    for c in $KT_CHECKS; do
        line=$(grep -E "^KT (PASS|FAIL) $c( |$)" "$RUN/results.txt" | head -1 || true)
        case $line in
            "KT PASS "*) pass "${line#KT PASS }" ;;
            "KT FAIL "*) fail "${line#KT FAIL }" ;;
            *) fail "$c: $no_result" ;;
        esac
    done
    if [[ -n $(info getattr-rtt-ms) ]]; then
        echo "     GETATTR round trip $(info getattr-rtt-ms) ms (guest, noac stat of the root)"
    fi
    if [[ -n $(info readdir-create-2000-secs) ]]; then
        echo "     2000 files: create $(info readdir-create-2000-secs)s, list $(info readdir-list-secs)s, remove $(info readdir-remove-2000-secs)s"
    fi
    if wants big64; then
        host_checksum big64 "$RUN/export/$VOL/kt/big64"
        if [[ -n $(info big64-write-secs) ]]; then
            echo "     64 MiB write $(info big64-write-secs)s, read after remount $(info big64-read-secs)s (TCG guest)"
        fi
    fi
    local tag
    for tag in restart v4-restart v4-lock-restart v40-lock-restart; do
        wants $tag || continue
        if [[ -f $RUN/$tag.result ]]; then
            rr() { sed -n "s/^$1=//p" "$RUN/$tag.result"; }
            if [[ $(rr done_before_kill) == no && $(rr restarted) == yes && $(rr completed) == yes ]]; then
                pass "$tag-across-kill: check completed $(rr stall)s after the server restart (server down 2 s)"
            else
                fail "$tag-across-kill: done before kill=$(rr done_before_kill), restarted=$(rr restarted), completed=$(rr completed)"
            fi
            if [[ $tag == *lock* ]]; then
                echo "     first guest write reaching the server after it was back: $(rr resume)s"
            else
                echo "     guest write across the restart took $(info "$tag-write-secs")s"
            fi
        else
            fail "$tag-across-kill: the guest never signalled its start"
        fi
    done
    if wants restart; then host_checksum restart "$RUN/export/$VOL/kt/restart64"; fi
    if wants v4-restart; then host_checksum v4-restart "$RUN/export/$VOL/kt4/restart64"; fi
    if [[ -n $(info default-mount) ]]; then
        echo "     mount.nfs with no options negotiated $(info default-mount)"
    fi
    if wants nlm-fcntl && [[ $SERVER_KIND == ours ]]; then nlm_server_side; fi
    if wants pjdfstest && [[ -n $(info pjdfstest-summary) ]]; then
        echo "     pjdfstest: $(info pjdfstest-summary)"
        sed -n 's/^KT INFO pjdfstest-failed /     pjdfstest failed: /p' "$RUN/results.txt"
    fi
    grep -q '^KT END' "$RUN/results.txt" || fail "guest-finished: no end marker (vm exit code $vm_rc)"
    if ((FAILED > 0)); then
        # The guest streams each check's output to the console prefixed with "[name] ".
        for c in $KT_CHECKS; do
            if grep -qE "^KT FAIL $c( |$)" "$RUN/results.txt"; then
                echo "--- console output of failed check $c (last 25 lines)"
                tr -d '\r' < "$CACHE/last-console.log" | grep -a "^\[$c\] " | tail -n 25
            fi
        done
        echo "--- last 30 lines of $CACHE/last-console.log"
        tail -n 30 "$CACHE/last-console.log" 2>/dev/null || true
        echo "--- last 20 lines of $RUN/server.log"
        tail -n 20 "$RUN/server.log" 2>/dev/null || true
    fi
}

# The server's side of nlm-fcntl: while the guest held its lock, another host (nlm_probe.py)
# was refused an exclusive lock on the file, and the server's log shows the guest's LOCK granted.
nlm_server_side() {
    local probe
    probe=$(cat "$RUN/nlm-probe.result" 2>/dev/null || echo "no probe result")
    if [[ $probe == "DENIED exclusive=1 "* ]] &&
        grep -E 'procedure="?LOCK"?' "$RUN/server.log" | grep -q NLM4_GRANTED; then
        pass "nlm-server-side: the guest's lock was granted and refused another host ($probe)"
    else
        fail "nlm-server-side: another host's TEST while the guest held the lock: $probe"
    fi
}

# Whatever stops the run early still ends with the summary line.
SUMMARY_PRINTED=
on_exit() {
    local rc=$?
    if [[ -z $SUMMARY_PRINTED ]]; then
        echo "kernel: $PASSED passed, $((FAILED + 1)) failed"
        ((rc != 0)) || exit 1
    fi
}

main() {
    if [[ ${1:-} == --inner ]]; then
        inner
        return
    fi
    [[ $# == 1 ]] || { echo "usage: $0 SERVER_BINARY | --ganesha" >&2; exit 2; }
    if [[ $1 == --ganesha ]]; then
        SERVER_KIND=ganesha
        SERVER_BIN=
        SERVER_NAME=NFS-Ganesha
    else
        SERVER_KIND=ours
        SERVER_BIN=$(readlink -f "$1")
        [[ -x $SERVER_BIN ]] || { log "not an executable: $1"; exit 2; }
        SERVER_NAME=$SERVER_BIN
    fi
    [[ $(id -u) == 0 ]] || { log "needs root (namespaces, ports, mounts)"; exit 2; }
    trap on_exit EXIT
    # One run at a time per checkout: runs share target/kernel-cache/run and the cached files.
    mkdir -p "$CACHE"
    exec 9> "$CACHE/run.lock"
    flock -w 1800 9 || { log "another run.sh holds $CACHE/run.lock"; exit 1; }

    ensure_packages qemu-system-x86 busybox-static cpio socat iproute2 util-linux kmod gzip
    if [[ $SERVER_KIND == ganesha ]]; then ensure_packages nfs-ganesha nfs-ganesha-vfs rpcbind; fi
    # The guest runs the host's rpcbind, rpc.statd and python3 (nlm-fcntl).
    ensure_packages rpcbind nfs-common python3
    ensure_tool pjdfstest 0.2.2
    ensure_tool fsx 0.3.2
    STANDIN_BIN=
    if [[ $SERVER_KIND == ours && " ${KT_CHECKS:-$ALL_CHECKS} " == *" expand "* ]]; then
        # The Kubernetes API stand-in for the expand check (no-op when up to date).
        command -v cargo > /dev/null || PATH=$HOME/.cargo/bin:$PATH
        (cd "$REPO" && cargo build -j2 -q --release --example standin-cluster) >&2
        STANDIN_BIN=$REPO/target/release/examples/standin-cluster
    fi
    local artefacts
    artefacts=$("$HERE/build-initramfs.sh")
    eval "$artefacts"   # KERNEL=... INITRD=...

    # shellcheck disable=SC2086,SC2116 # collapses the list onto one line
    KT_CHECKS=$(echo ${KT_CHECKS:-$ALL_CHECKS})
    # Ganesha runs here without NLM (Enable_NLM = false): no lock checks; and without sized
    # volumes: no quota checks (prjquota runs our server inside the guest; expand needs our
    # provisioner).
    if [[ $SERVER_KIND == ganesha ]]; then
        KT_CHECKS=$(echo " $KT_CHECKS " | sed 's/ nlm-fcntl / /; s/ quota / /; s/ v4-quota / /; s/ prjquota / /; s/ expand / /; s/^ //; s/ $//')
    fi
    KT_TIMEOUT=${KT_TIMEOUT:-720}
    KT_FSX_OPS=${KT_FSX_OPS:-1200}
    KT_FSX_SEED=${KT_FSX_SEED:-1}

    prepare_export
    prepare_guest_files
    rm -f "$CACHE/last-console.log"

    log "server: $SERVER_NAME; guest checks: $KT_CHECKS"
    local start vm_rc=0
    start=$(date +%s)
    export SERVER_KIND SERVER_BIN STANDIN_BIN KERNEL RUN CACHE KT_CHECKS KT_TIMEOUT KT_PCAP=${KT_PCAP:-}
    unshare --net --mount --propagation private -- bash "$0" --inner || vm_rc=$?
    report "$vm_rc" "$(($(date +%s) - start))"
    SUMMARY_PRINTED=1
    echo "kernel: $PASSED passed, $FAILED failed"
    ((FAILED == 0))
}

main "$@"
