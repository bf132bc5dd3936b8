#!/usr/bin/env bash
# Real C client test (testing layer 3): drive the server with libnfs-utils
# (nfs-cp, nfs-ls, nfs-cat) over NFSv3 and NFSv4.0 on the standard ports 111/2049/20048.
#
# Usage: tests/libnfs/run.sh SERVER_BINARY
#        tests/libnfs/run.sh ganesha        (validate the checks against NFS-Ganesha)
#
# Everything runs inside a private network + mount namespace (needs root), so
# the standard ports never clash with anything else on the machine. Each check
# prints PASS/FAIL; the last line is `libnfs: N passed, M failed`; the exit
# status is non-zero when any check failed.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 SERVER_BINARY|ganesha" >&2
    exit 2
fi

if [[ "${1}" != "__inside" ]]; then
    target="$1"
    if [[ "$target" != "ganesha" ]]; then
        if [[ ! -x "$target" ]]; then
            echo "server binary not found or not executable: $target" >&2
            exit 2
        fi
        target="$(cd "$(dirname "$target")" && pwd)/$(basename "$target")"
    fi
    install_pkgs() {
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y "$@" >/dev/null 2>&1 || {
            apt-get update >/dev/null && apt-get install -y "$@" >/dev/null
        }
    }
    command -v nfs-cp >/dev/null || install_pkgs libnfs-utils
    if [[ "$target" == "ganesha" ]]; then
        command -v ganesha.nfsd >/dev/null && command -v rpcbind >/dev/null \
            || install_pkgs nfs-ganesha nfs-ganesha-vfs rpcbind
    fi
    exec unshare --net --mount --propagation private -- bash "$0" __inside "$target"
fi

# ---------------------------------------------------------------------------
# Inside the private namespace from here on.
target="$2"
# Plain server logs (no ANSI colours) and plain error reports.
export NO_COLOR=1 RUST_BACKTRACE=0
ip link set lo up
ip addr add 127.0.0.2/8 dev lo
# A private /run: rpcbind (Ganesha mode) keeps its socket and state there.
mount -t tmpfs tmpfs /run

work="$(mktemp -d "${TMPDIR:-/var/tmp}/libnfs-test.XXXXXX")"
log="$(mktemp "${TMPDIR:-/var/tmp}/libnfs-server.XXXXXX.log")"
root="$work/export"
mkdir -p "$root"
pids=()
passed=0
failed=0

cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$work"
    # Keep the server log only when something failed.
    [[ $failed -gt 0 ]] || rm -f "$log"
}
trap cleanup EXIT

pass() {
    echo "PASS: $1"
    passed=$((passed + 1))
}
fail() {
    echo "FAIL: $1"
    failed=$((failed + 1))
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start_ours() {
    local v
    for v in vol second; do
        if "$target" volume add "$v" --export-root "$root" >>"$log" 2>&1 && [[ -d "$root/$v" ]]; then
            pass "volume add $v"
        else
            fail "volume add $v (exit status or missing $root/$v)"
        fi
    done
    "$target" serve --export-root "$root" --bind 127.0.0.1 >>"$log" 2>&1 &
    pids+=("$!")
}

start_ganesha() {
    mkdir -p "$root/vol" "$root/second"
    chmod 0777 "$root/vol" "$root/second"
    cat >"$work/ganesha.conf" <<EOF
NFS_CORE_PARAM {
    Bind_addr = 127.0.0.1; NFS_Port = 2049; MNT_Port = 20048; Protocols = 3, 4;
    Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false; Mount_Path_Pseudo = true;
}
NFSV4 { Graceless = true; }
EXPORT {
    Export_Id = 1; Path = $root/vol; Pseudo = /export/vol; Protocols = 3, 4;
    Access_Type = RW; Squash = No_Root_Squash; SecType = sys; FSAL { Name = VFS; }
}
EXPORT {
    Export_Id = 2; Path = $root/second; Pseudo = /export/second; Protocols = 3, 4;
    Access_Type = RW; Squash = No_Root_Squash; SecType = sys; FSAL { Name = VFS; }
}
EOF
    rpcbind -f -w >>"$log" 2>&1 &
    pids+=("$!")
    for _ in $(seq 50); do port_open 111 && break; sleep 0.1; done
    ganesha.nfsd -F -f "$work/ganesha.conf" -L "$log" -p "$work/ganesha.pid" &
    pids+=("$!")
}

if [[ "$target" == "ganesha" ]]; then
    start_ganesha
else
    start_ours
fi

# Wait (at most 30 s) until the portmapper, MOUNT and NFS ports accept connections.
ready=0
for _ in $(seq 300); do
    if port_open 111 && port_open 20048 && port_open 2049; then
        ready=1
        break
    fi
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if [[ $ready -eq 1 ]]; then
    pass "server listens on 111, 2049 and 20048"
else
    fail "server listens on 111, 2049 and 20048"
fi
# Ganesha opens its ports a moment before it registers with rpcbind.
[[ "$target" == "ganesha" ]] && sleep 2

url="nfs://127.0.0.1/export/vol"
T="timeout 120"

# (1) 64 MiB round trip, ports discovered through the portmapper.
head -c 64M /dev/urandom >"$work/src.bin"
if $T nfs-cp "$work/src.bin" "$url/big.bin?version=3" >"$work/cp-in.out" 2>&1; then
    pass "nfs-cp 64 MiB in (portmapper discovery)"
else
    fail "nfs-cp 64 MiB in: $(tail -n 3 "$work/cp-in.out" | tr '\n' ' ')"
fi
if $T nfs-cp "$url/big.bin?version=3" "$work/copy.bin" >"$work/cp-out.out" 2>&1; then
    pass "nfs-cp 64 MiB out"
else
    fail "nfs-cp 64 MiB out: $(tail -n 3 "$work/cp-out.out" | tr '\n' ' ')"
fi
sum() { if [[ -f "$1" ]]; then sha256sum "$1" | cut -d' ' -f1; else echo "missing"; fi; }
s_src="$(sum "$work/src.bin")"
s_exp="$(sum "$root/vol/big.bin")"
s_cp="$(sum "$work/copy.bin")"
if [[ "$s_src" == "$s_exp" && "$s_src" == "$s_cp" ]]; then
    pass "sha256 source == export file == copy ($s_src)"
else
    fail "sha256 mismatch: source $s_src, export file $s_exp, copy $s_cp"
fi

# (2) the export list names both volumes.
if $T nfs-ls -D nfs://127.0.0.1 >"$work/exports.out" 2>&1 \
    && grep -q '/export/vol$' "$work/exports.out" \
    && grep -q '/export/second$' "$work/exports.out"; then
    pass "nfs-ls -D lists /export/vol and /export/second"
else
    fail "nfs-ls -D: $(tr '\n' ' ' <"$work/exports.out")"
fi

# (3) directory listing shows big.bin with its size.
if $T nfs-ls "$url?version=3" >"$work/ls.out" 2>&1 \
    && awk '$NF == "big.bin" && $(NF-1) == 67108864 { found = 1 } END { exit !found }' "$work/ls.out"; then
    pass "nfs-ls shows big.bin with 67108864 bytes"
else
    fail "nfs-ls: $(tr '\n' ' ' <"$work/ls.out")"
fi

# (4) read a small file that was put into the volume directly on disk.
printf 'hello from the export\nline two\n' >"$work/small.txt"
if cp "$work/small.txt" "$root/vol/small.txt" 2>/dev/null && chmod 0644 "$root/vol/small.txt" \
    && $T nfs-cat "$url/small.txt?version=3" >"$work/cat.out" 2>"$work/cat.err" \
    && cmp -s "$work/cat.out" "$work/small.txt"; then
    pass "nfs-cat small.txt returns its exact content"
else
    fail "nfs-cat small.txt: got '$(head -c 200 "$work/cat.out" 2>/dev/null)' $(tr '\n' ' ' 2>/dev/null <"$work/cat.err")"
fi

# (5) NFSv4.0 (libnfs's only NFSv4 minor version): a small file written and read back, the
# 64 MiB file read, a listing, and the file put on disk read. libnfs 4.0.0 refuses NFSv4
# writes of more than about 3 KB on its own side (it never sends them; the same against
# NFS-Ganesha), so the written file is small.
head -c 2000 /dev/urandom >"$work/src4.bin"
if $T nfs-cp "$work/src4.bin" "$url/v4.bin?version=4" >"$work/cp4-in.out" 2>&1 \
    && $T nfs-cp "$url/v4.bin?version=4" "$work/copy4.bin" >"$work/cp4-out.out" 2>&1 \
    && [[ "$(sum "$work/src4.bin")" == "$(sum "$root/vol/v4.bin")" ]] \
    && [[ "$(sum "$work/src4.bin")" == "$(sum "$work/copy4.bin")" ]]; then
    pass "NFSv4.0: nfs-cp 2000 bytes in and out, sha256 equal on the export and the copy"
else
    fail "NFSv4.0 nfs-cp small: $(tail -n 3 "$work/cp4-in.out" "$work/cp4-out.out" 2>/dev/null | tr '\n' ' ')"
fi
if $T nfs-cp "$url/big.bin?version=4" "$work/big4.bin" >"$work/cp4-big.out" 2>&1 \
    && [[ "$(sum "$work/big4.bin")" == "$s_src" ]]; then
    pass "NFSv4.0: nfs-cp 64 MiB out, sha256 equal to the source"
else
    fail "NFSv4.0 nfs-cp 64 MiB out: $(tail -n 3 "$work/cp4-big.out" | tr '\n' ' ')"
fi
if $T nfs-ls "$url?version=4" >"$work/ls4.out" 2>&1 \
    && awk '$NF == "v4.bin" && $(NF-1) == 2000 { found = 1 } END { exit !found }' "$work/ls4.out" \
    && $T nfs-cat "$url/small.txt?version=4" >"$work/cat4.out" 2>"$work/cat4.err" \
    && cmp -s "$work/cat4.out" "$work/small.txt"; then
    pass "NFSv4.0: nfs-ls shows v4.bin with 2000 bytes, nfs-cat reads small.txt"
else
    fail "NFSv4.0 nfs-ls/nfs-cat: $(tr '\n' ' ' <"$work/ls4.out") $(tr '\n' ' ' 2>/dev/null <"$work/cat4.err")"
fi

if [[ $failed -gt 0 ]]; then
    echo "--- server log (last 40 lines of $log) ---"
    tail -n 40 "$log"
    echo "--- end of server log ---"
fi
echo "libnfs: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
