#!/usr/bin/env bash
# Runs the generated-client examples against the real keygate binary:
#   1. installs what generation needs when it is missing: the pinned Python deps into
#      examples/.venv, the pinned npm deps (examples/typescript, and tools/ for buf and ts-proto),
#      and Debian's Go toolchain, Go plugins and grpc-go sources (apt-get, as root),
#   2. generates the Go, Python and TypeScript clients with one command, `buf generate`
#      (buf.gen.yaml, into gen/), type-checks the TypeScript one, builds the Go example against the
#      Go one, and generates the TypeScript example's own types (examples/typescript/gen),
#   3. starts `keygate serve` on free loopback ports with its data in a temp dir,
#   4. runs examples/python/quickstart.py (on gen/python), examples/typescript/quickstart.ts
#      (compiled by tsc) and examples/go/quickstart (on gen/go),
#   5. stops the server on exit.
# Exits non-zero if any step or any example fails.
#
# Environment:
#   KEYGATE_BIN   the binary to test (default target/debug/keygate; built with
#                 `cargo build -p keygate` when the default path is missing)
#   PYTHON        interpreter for the venv (default python3; the pins are tested on 3.11)
set -euo pipefail

EXAMPLES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$EXAMPLES")"
PROTO="$REPO/proto"
VENV="$EXAMPLES/.venv"
PY_DIR="$EXAMPLES/python"
TS_DIR="$EXAMPLES/typescript"
GO_DIR="$EXAMPLES/go"
GEN="$REPO/gen"
BUF="$REPO/tools/node_modules/.bin/buf"
# Debian lays Go sources out as a GOPATH (/usr/share/gocode/src/<import path>); the module proxy
# is not used.
GOCODE=/usr/share/gocode
GO_PACKAGES=(golang-go golang-google-grpc-dev golang-google-genproto-dev
  golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev protoc-gen-go protoc-gen-go-grpc)
PYTHON="${PYTHON:-python3}"
CHECK_NAME="check.sh"
# shellcheck source=../tools/lib/keygate-check.sh
source "$REPO/tools/lib/keygate-check.sh"
CLEANUP_EXTRA+=('rm -f "$REPO/gen/ts/node_modules"')

# --- 1. Dependencies --------------------------------------------------------------------------
step "python: pinned deps from python/requirements.txt into .venv"
pip_install_pinned "$VENV" "$PY_DIR/requirements.txt" "$PYTHON"

step "typescript: npm install (package-lock.json)"
npm_install_locked "$TS_DIR"

step "tools: buf and ts-proto (npm install --prefix tools; exact pins and the lock)"
if [[ ! -x "$BUF" || ! -x "$REPO/tools/node_modules/.bin/protoc-gen-ts_proto" ]]; then
  npm install --prefix "$REPO/tools" --no-audit --no-fund --loglevel=error
fi

step "go: toolchain, protoc-gen-go, protoc-gen-go-grpc and grpc-go sources (Debian packages)"
go_ready() {
  command -v go >/dev/null && command -v protoc-gen-go >/dev/null &&
    command -v protoc-gen-go-grpc >/dev/null &&
    [[ -d "$GOCODE/src/google.golang.org/grpc" && -d "$GOCODE/src/google.golang.org/protobuf" &&
      -d "$GOCODE/src/google.golang.org/genproto/googleapis/rpc/errdetails" ]]
}
if ! go_ready; then
  if ((EUID != 0)); then
    echo "check.sh: Go is missing: install as root: apt-get install ${GO_PACKAGES[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${GO_PACKAGES[@]}" >/dev/null
  go_ready || { echo "check.sh: Go packages installed but incomplete" >&2; exit 1; }
fi
go version

# --- 2. Generated clients (never committed) ---------------------------------------------------
step "buf generate: Go, Python and TypeScript clients from proto/ into gen/ (buf.gen.yaml)"
# gen/ts/node_modules is a link made below for the type-check; buf's clean would empty what it
# points at, so it must not exist while buf runs.
rm -f "$GEN/ts/node_modules"
(cd "$REPO" && "$BUF" generate)
for f in go/keygate/v1/access_grants_grpc.pb.go python/keygate/v1/access_grants_pb2_grpc.py \
  ts/keygate/v1/access_grants.ts go/keygate/admin/v1/workspaces.pb.go; do
  [[ -s "$GEN/$f" ]] || { echo "check.sh: buf generate did not write gen/$f" >&2; exit 1; }
done

step "typescript: type-checking the generated client (gen/ts) with tsc"
# The generated files import @grpc/grpc-js and @bufbuild/protobuf, found through a link to the
# example's node_modules for the length of the check (and removed at exit).
ln -sfn "$TS_DIR/node_modules" "$GEN/ts/node_modules"
(cd "$TS_DIR" && node_modules/.bin/tsc -p tsconfig.gen.json)
rm -f "$GEN/ts/node_modules"

step "go: building examples/go/quickstart against gen/go (GOPATH mode over $GOCODE)"
GO_PATH_DIR="$WORK/gopath"
mkdir -p "$GO_PATH_DIR/src/keygate.dev/gen"
ln -s "$GEN/go" "$GO_PATH_DIR/src/keygate.dev/gen/go"
(cd "$GO_DIR/quickstart" &&
  GO111MODULE=off GOPATH="$GO_PATH_DIR:$GOCODE" GOFLAGS= \
    go build -o "$WORK/go-quickstart" .)

step "typescript: generating types from proto/ with proto-loader-gen-types, compiling with tsc"
rm -rf "$TS_DIR/gen" "$TS_DIR/dist"
(cd "$TS_DIR" && npm run --silent generate && npm run --silent build)

# The TypeScript example vendors google/rpc/{status,error_details}.proto; they must be the ones
# of the pinned googleapis-common-protos.
site="$("$VENV/bin/python" -c 'import os, google.rpc.status_pb2 as m; print(os.path.dirname(m.__file__))')"
for f in status.proto error_details.proto; do
  if ! cmp -s "$site/$f" "$TS_DIR/proto/google/rpc/$f"; then
    echo "check.sh: typescript/proto/google/rpc/$f differs from googleapis-common-protos'" >&2
    exit 1
  fi
done

# --- 3. The server ----------------------------------------------------------------------------
start_keygate
GRPC_ADDR="$(sed -n 's/^keygate: gRPC API listening on //p' "$WORK/server.stdout")"
HTTP_ADDR="$(sed -n 's/^keygate: HTTP (livez, readyz) listening on //p' "$WORK/server.stdout")"
API_KEY_FILE="$WORK/data/sandbox-api-key"
[[ -n "$GRPC_ADDR" && -n "$HTTP_ADDR" && -s "$API_KEY_FILE" ]] || {
  echo "check.sh: could not read the addresses or the sandbox key from keygate's output" >&2
  exit 1
}
# Ready on HTTP too (what a load balancer would check).
"$VENV/bin/python" - "$HTTP_ADDR" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}/readyz", timeout=5) as r:
    assert r.status == 200, r.status
PY
step "keygate ready: gRPC $GRPC_ADDR, HTTP $HTTP_ADDR"

# --- 4. The examples --------------------------------------------------------------------------
export KEYGATE_ADDR="$GRPC_ADDR"
export KEYGATE_API_KEY_FILE="$API_KEY_FILE"

step "running python/quickstart.py (on gen/python from buf generate)"
KEYGATE_PY_GEN="$GEN/python" "$VENV/bin/python" "$PY_DIR/quickstart.py"

step "running typescript/quickstart.ts (dist/quickstart.js)"
KEYGATE_PROTO_DIR="$PROTO" node "$TS_DIR/dist/quickstart.js"

step "running go/quickstart (on gen/go from buf generate)"
"$WORK/go-quickstart"

step "OK: all three examples passed"
