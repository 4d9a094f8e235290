#!/usr/bin/env bash
# Makes sure a helm v3 binary of the pinned version exists and prints its absolute path (the only
# line on stdout; progress goes to stderr). The Kubernetes tests call this through a session
# fixture, so `make test` on a fresh machine builds helm by itself.
#
# helm is not packaged for this machine and no chart or release download is reachable, so it is
# built from source through the Go module proxy (`go install helm.sh/helm/v3/cmd/helm@VERSION`).
# Idempotent: a `helm` on PATH or in the Go bin directory with the pinned version is reused.
# When no Go toolchain is installed, or it is older than helm needs, the Go toolchain is itself
# fetched as the Go module golang.org/toolchain from the same proxy.
#
# Environment: HELM_VERSION (default below), FINPIPE_CACHE_DIR (default ~/.cache/finpipe).
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.19.5}"
GO_MIN_MINOR=24                        # helm v3.19 declares go 1.24 in its go.mod
GO_FALLBACK_VERSION="go1.24.11"        # toolchain fetched when no usable Go exists
CACHE_DIR="${FINPIPE_CACHE_DIR:-$HOME/.cache/finpipe}"

log() { echo "ensure-helm: $*" >&2; }

# True when the binary at $1 is helm $HELM_VERSION. A go-installed binary records its module
# version (read with `go version -m`); `helm version` of such a build without our -ldflags
# reports only vMAJOR.MINOR, so that is accepted when no Go is at hand to read the module.
helm_is_pinned() {
  local bin="$1" v=""
  [ -x "$bin" ] || return 1
  if command -v go >/dev/null 2>&1; then
    v=$(go version -m "$bin" 2>/dev/null | awk '$1 == "mod" && $2 == "helm.sh/helm/v3" {print $3}')
    [ -n "$v" ] && { [ "$v" = "$HELM_VERSION" ]; return; }
  fi
  v=$("$bin" version --template '{{.Version}}' 2>/dev/null || true)
  [ "$v" = "$HELM_VERSION" ] || [ "$v" = "${HELM_VERSION%.*}" ]
}

# Make `go` resolvable if it is installed outside PATH (the usual /usr/local/go).
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH="/usr/local/go/bin:$PATH"
fi

gobin() {
  local d
  d=$(go env GOBIN 2>/dev/null || true)
  [ -n "$d" ] || d="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
  echo "$d"
}

candidates=()
command -v helm >/dev/null 2>&1 && candidates+=("$(command -v helm)")
if command -v go >/dev/null 2>&1; then candidates+=("$(gobin)/helm"); fi
candidates+=("$HOME/go/bin/helm")
for c in "${candidates[@]}"; do
  if helm_is_pinned "$c"; then
    echo "$c"
    exit 0
  fi
done

# One build at a time (parallel test sessions would otherwise both compile).
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/ensure-helm.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi
for c in "${candidates[@]}"; do
  if helm_is_pinned "$c"; then
    echo "$c"
    exit 0
  fi
done

go_usable() {
  command -v go >/dev/null 2>&1 || return 1
  local minor
  minor=$(go env GOVERSION 2>/dev/null | sed -nE 's/^go1\.([0-9]+).*/\1/p')
  [ -n "$minor" ] && [ "$minor" -ge "$GO_MIN_MINOR" ]
}

if ! go_usable; then
  # The Go toolchain is published as a Go module; take it from the Go module proxy.
  arch=$(uname -m)
  case "$arch" in x86_64) arch=amd64 ;; aarch64 | arm64) arch=arm64 ;; esac
  tc_dir="$CACHE_DIR/go-toolchain/$GO_FALLBACK_VERSION"
  if [ ! -x "$tc_dir/bin/go" ]; then
    proxy="${GOPROXY:-https://proxy.golang.org}"
    proxy="${proxy%%,*}"
    url="$proxy/golang.org/toolchain/@v/v0.0.1-$GO_FALLBACK_VERSION.linux-$arch.zip"
    log "no Go >= 1.$GO_MIN_MINOR; fetching $url"
    tmp=$(mktemp -d)
    curl -fsSL -o "$tmp/tc.zip" "$url"
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
      "$tmp/tc.zip" "$tmp/x"
    mkdir -p "$(dirname "$tc_dir")"
    rm -rf "$tc_dir"
    mv "$tmp/x/golang.org/toolchain@v0.0.1-$GO_FALLBACK_VERSION.linux-$arch" "$tc_dir"
    chmod -R u+x "$tc_dir/bin" "$tc_dir/pkg/tool"
    rm -rf "$tmp"
  fi
  export PATH="$tc_dir/bin:$PATH" GOROOT="$tc_dir"
fi

target="$(gobin)/helm"
log "building helm $HELM_VERSION with $(go env GOVERSION) (a few minutes on 2 cores) -> $target"
start=$(date +%s)
# Outside any module, so the project tree's files play no part; -mod=mod lets go resolve deps.
(cd "$(mktemp -d)" && GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0 \
  nice -n 10 go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION") >&2
log "built in $(( $(date +%s) - start )) s"

if ! helm_is_pinned "$target"; then
  log "built $target but it does not report version $HELM_VERSION"
  exit 1
fi
echo "$target"
