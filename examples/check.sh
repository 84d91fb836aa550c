#!/usr/bin/env bash
# Runs the generated-client examples against the real keygate binary:
#   1. installs the pinned Python deps into examples/.venv and the pinned npm deps,
#   2. generates both clients from proto/ (examples/python/gen, examples/typescript/gen),
#   3. starts `keygate serve` on free loopback ports with its data in a temp dir,
#   4. runs examples/python/quickstart.py, then examples/typescript/quickstart.ts (compiled by tsc),
#   5. stops the server on exit.
# Exits non-zero if any step or either example fails.
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
PYTHON="${PYTHON:-python3}"
DEFAULT_BIN="$REPO/target/debug/keygate"
KEYGATE_BIN="${KEYGATE_BIN:-$DEFAULT_BIN}"
READY_TIMEOUT_SECS=60

START=$SECONDS
step() { echo "check.sh [$((SECONDS - START))s] $*"; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/keygate-examples.XXXXXX")"
SERVER_PID=""
cleanup() {
  local rc=$?
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -f "$WORK/server.stderr" ]]; then
    echo "check.sh: FAILED (exit $rc); last lines of the keygate log:" >&2
    tail -n 40 "$WORK/server.stderr" >&2 || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. Dependencies --------------------------------------------------------------------------
step "python: pinned deps from python/requirements.txt into .venv"
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
# Reinstall only when requirements.txt or the interpreter changed.
stamp="$(cat "$PY_DIR/requirements.txt" <("$VENV/bin/python" --version) | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)" != "$stamp" ]]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$PY_DIR/requirements.txt"
  "$VENV/bin/python" -m pip check --disable-pip-version-check >/dev/null
  echo "$stamp" >"$VENV/.requirements.sha256"
fi

step "typescript: npm install (package-lock.json)"
cp "$TS_DIR/package-lock.json" "$WORK/package-lock.before"
(cd "$TS_DIR" && npm install --no-audit --no-fund --loglevel=error)
if ! cmp -s "$WORK/package-lock.before" "$TS_DIR/package-lock.json"; then
  echo "check.sh: npm install changed typescript/package-lock.json: it is out of step with" \
    "package.json; review and commit the new lock file" >&2
  exit 1
fi

# --- 2. Generated clients (never committed) ---------------------------------------------------
step "python: generating the client from proto/ with grpc_tools.protoc"
rm -rf "$PY_DIR/gen"
mkdir -p "$PY_DIR/gen"
(cd "$REPO" && "$VENV/bin/python" -m grpc_tools.protoc -I proto \
  --python_out="$PY_DIR/gen" --pyi_out="$PY_DIR/gen" --grpc_python_out="$PY_DIR/gen" \
  proto/keygate/v1/*.proto)

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
if [[ ! -x "$KEYGATE_BIN" ]]; then
  if [[ "$KEYGATE_BIN" != "$DEFAULT_BIN" ]]; then
    echo "check.sh: KEYGATE_BIN=$KEYGATE_BIN is not an executable file" >&2
    exit 1
  fi
  step "building keygate (cargo build -p keygate)"
  (cd "$REPO" && cargo build --quiet -p keygate)
fi

step "starting $KEYGATE_BIN serve (data in a temp dir, free loopback ports)"
# The server gets none of the caller's KEYGATE_* settings: embedded SQLite, sandbox bootstrap.
unset_env=()
while IFS= read -r name; do
  unset_env+=(-u "$name")
done < <(compgen -e | grep '^KEYGATE_' || true)
env "${unset_env[@]}" NO_COLOR=1 "$KEYGATE_BIN" serve \
  --data-dir "$WORK/data" \
  --grpc-addr 127.0.0.1:0 \
  --http-addr 127.0.0.1:0 \
  --drain-secs 2 \
  >"$WORK/server.stdout" 2>"$WORK/server.stderr" &
SERVER_PID=$!

# `keygate: ready` (stdout) comes after the listen lines, which carry the ports it was given.
deadline=$((SECONDS + READY_TIMEOUT_SECS))
until grep -q '^keygate: ready' "$WORK/server.stdout"; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "check.sh: keygate exited before it was ready" >&2
    cat "$WORK/server.stdout" >&2
    exit 1
  fi
  if ((SECONDS > deadline)); then
    echo "check.sh: keygate not ready after ${READY_TIMEOUT_SECS}s" >&2
    exit 1
  fi
  sleep 0.1
done
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

step "running python/quickstart.py"
KEYGATE_PY_GEN="$PY_DIR/gen" "$VENV/bin/python" "$PY_DIR/quickstart.py"

step "running typescript/quickstart.ts (dist/quickstart.js)"
KEYGATE_PROTO_DIR="$PROTO" node "$TS_DIR/dist/quickstart.js"

step "OK: both examples passed"
