#!/bin/sh
# Runs in the guest (busybox ash) after /init: runs each named check from checks.sh in its own
# `sh -e` process and reports `KT PASS name` / `KT FAIL name: detail` on the results channel
# (/dev/ttyS1). The full output of a failing check goes to the console (ttyS0), which run.sh
# keeps in target/kernel-cache/last-console.log.
. /kt/config
set -o pipefail
RES=/dev/ttyS1

report() {
    echo "KT $*" > "$RES"
    echo "=== KT $*"
}

# run_check NAME: the check's stdout/stderr is streamed to the console with a prefix and kept
# for the failure line. Later checks still run after a failure: each sets up what it needs.
run_check() {
    name=$1
    case " $KT_CHECKS " in *" $name "*) ;; *) return 0 ;; esac
    echo "--- check $name"
    start=$(date +%s)
    # -x: the failing command shows up in the console log. Streamed, so a hang shows where.
    sh -ex /kt/checks.sh "$name" 2>&1 | tee "/tmp/kt-$name.log" | sed "s/^/[$name] /"
    rc=$?
    secs=$(($(date +%s) - start))
    if [ $rc -eq 0 ]; then
        report "PASS $name (${secs}s)"
    else
        # The last non-trace lines are usually the error message.
        detail=$(grep -v '^+' "/tmp/kt-$name.log" | tail -4 | tr '\n' ' ' | cut -c1-500)
        report "FAIL $name (${secs}s): $detail"
    fi
    # Values a check wants run.sh to see (checksums, timings).
    if [ -f "/tmp/kt-$name.info" ]; then
        while read -r line; do echo "KT INFO $line" > "$RES"; done < "/tmp/kt-$name.info"
    fi
}

echo "KT START" > "$RES"
for c in $KT_ORDER; do run_check "$c"; done
