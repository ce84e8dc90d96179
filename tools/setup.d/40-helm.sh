#!/usr/bin/env bash
# Idempotent set-up of the real `helm` CLI for the chart tests (tests/charts/).
#
# Helm is not packaged in Debian, so it is built from source with the Go toolchain through the Go module
# proxy (`go install helm.sh/helm/v3/cmd/helm@<version>`), with the same version ldflags as Helm's own
# Makefile (so `helm version` and the default .Capabilities.KubeVersion are right).
#
#   first time on a machine : ~95-135 s on 2 otherwise idle cores (module download + compile; ~290 s when
#                             the machine is busy with other jobs), a ~60 MB binary
#   afterwards              : ~0.1 s (the binary is cached per user and copied into .cache/bin/helm, so a
#                             fresh clone on the same machine takes ~0.2 s)
#
# Result: <repo>/.cache/bin/helm (git-ignored). Override the version with HYMIREC_HELM_VERSION.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HELM_VERSION="${HYMIREC_HELM_VERSION:-v3.22.0}"
# Helm's Makefile derives the default Kubernetes version from its k8s.io/client-go module: v3.22.0 uses
# client-go v0.37.x, i.e. Kubernetes 1.37. Keep in step with HELM_VERSION.
K8S_MAJOR="${HYMIREC_HELM_K8S_MAJOR:-1}"
K8S_MINOR="${HYMIREC_HELM_K8S_MINOR:-37}"

DEST="$ROOT/.cache/bin/helm"
# Per-user cache shared by every clone on this machine (CI runs in a fresh clone).
USER_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/hymirec/helm-$HELM_VERSION-k8s$K8S_MAJOR.$K8S_MINOR"
CACHED="$USER_CACHE/helm"

have_version() {  # $1: binary
    [ -x "$1" ] && [ "$("$1" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]
}

if have_version "$DEST"; then
    echo "[setup] helm $HELM_VERSION up to date ($DEST)"
    exit 0
fi

mkdir -p "$USER_CACHE" "$(dirname "$DEST")"
exec 9>"$USER_CACHE/.lock"
flock 9   # one build at a time per machine

if ! have_version "$CACHED"; then
    if ! command -v go >/dev/null 2>&1; then
        echo "[setup] helm: the Go toolchain is needed to build helm $HELM_VERSION (go not found on PATH)" >&2
        exit 1
    fi
    echo "[setup] building helm $HELM_VERSION with $(go version | cut -d' ' -f3) (first time: ~1.5 min)"
    start=$(date +%s)
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    LDFLAGS="-s -w"
    LDFLAGS+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    LDFLAGS+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    LDFLAGS+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$K8S_MAJOR"
    LDFLAGS+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$K8S_MINOR"
    LDFLAGS+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$K8S_MAJOR"
    LDFLAGS+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$K8S_MINOR"
    if ! GOBIN="$tmp" CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-local}" \
        go install -trimpath -ldflags "$LDFLAGS" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >"$tmp/build.log" 2>&1; then
        tail -n 40 "$tmp/build.log" >&2
        echo "[setup] helm: go install failed" >&2
        exit 1
    fi
    mv -f "$tmp/helm" "$CACHED.new" && mv -f "$CACHED.new" "$CACHED"
    echo "[setup] helm built in $(( $(date +%s) - start )) s"
fi

cp -f "$CACHED" "$DEST.new" && mv -f "$DEST.new" "$DEST"
have_version "$DEST" || { echo "[setup] helm: $DEST does not report $HELM_VERSION" >&2; exit 1; }
echo "[setup] helm $HELM_VERSION ready ($DEST)"
