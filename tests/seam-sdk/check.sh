#!/usr/bin/env bash
# Runs seed 004's access grant quick start with Seam's official SDKs against the real keygate
# binary, through the Seam-compatible HTTP API (docs/seam-compatibility.md):
#   1. installs PyPI `seam` 3.18.0 (requirements.txt, every dependency pinned) into .venv and
#      npm `seam` 1.245.0 (package-lock.json),
#   2. starts `keygate serve` on free loopback ports with its data in a temp dir,
#   3. runs quickstart.py, then quickstart.mjs: the seed's Python and JavaScript code as written,
#      with only the endpoint (SEAM_ENDPOINT), the key (SEAM_API_KEY) and its dates (moved into
#      the future here) changed, followed by the checks the seed leaves to the reader; then the
#      seed's cURL (quickstart.sh) when curl and jq are installed,
#   4. runs contract.mjs: every served route called, every reply validated against the schemas
#      of @seamapi/types 1.977.0's OpenAPI,
#   5. stops the server on exit.
# Exits non-zero if any step or either script fails.
#
# Environment:
#   KEYGATE_BIN   the binary to test (default target/debug/keygate; built with
#                 `cargo build -p keygate` when the default path is missing)
#   PYTHON        interpreter for the venv (default python3; tested on 3.11)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv"
PYTHON="${PYTHON:-python3}"
DEFAULT_BIN="$REPO/target/debug/keygate"
KEYGATE_BIN="${KEYGATE_BIN:-$DEFAULT_BIN}"
READY_TIMEOUT_SECS=60

START=$SECONDS
step() { echo "seam-sdk/check.sh [$((SECONDS - START))s] $*"; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/keygate-seam-sdk.XXXXXX")"
SERVER_PID=""
RUN_MJS="$HERE/.quickstart.run.mjs"
cleanup() {
  local rc=$?
  rm -f "$RUN_MJS"
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -f "$WORK/server.stderr" ]]; then
    echo "seam-sdk/check.sh: FAILED (exit $rc); last lines of the keygate log:" >&2
    tail -n 40 "$WORK/server.stderr" >&2 || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. The SDKs ------------------------------------------------------------------------------
step "python: seam 3.18.0 and its pinned dependencies into .venv"
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$(cat "$HERE/requirements.txt" <("$VENV/bin/python" --version) | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)" != "$stamp" ]]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$HERE/requirements.txt"
  "$VENV/bin/python" -m pip check --disable-pip-version-check >/dev/null
  echo "$stamp" >"$VENV/.requirements.sha256"
fi

step "javascript: seam 1.245.0, @seamapi/types 1.977.0 and ajv: npm install (package-lock.json)"
cp "$HERE/package-lock.json" "$WORK/package-lock.before"
(cd "$HERE" && npm install --no-audit --no-fund --loglevel=error)
if ! cmp -s "$WORK/package-lock.before" "$HERE/package-lock.json"; then
  echo "seam-sdk/check.sh: npm install changed package-lock.json: it is out of step with" \
    "package.json; review and commit the new lock file" >&2
  exit 1
fi

# --- 2. The server ----------------------------------------------------------------------------
if [[ ! -x "$KEYGATE_BIN" ]]; then
  if [[ "$KEYGATE_BIN" != "$DEFAULT_BIN" ]]; then
    echo "seam-sdk/check.sh: KEYGATE_BIN=$KEYGATE_BIN is not an executable file" >&2
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
  --webhook-allow-loopback true \
  >"$WORK/server.stdout" 2>"$WORK/server.stderr" &
SERVER_PID=$!

deadline=$((SECONDS + READY_TIMEOUT_SECS))
until grep -q '^keygate: ready' "$WORK/server.stdout"; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "seam-sdk/check.sh: keygate exited before it was ready" >&2
    cat "$WORK/server.stdout" >&2
    exit 1
  fi
  if ((SECONDS > deadline)); then
    echo "seam-sdk/check.sh: keygate not ready after ${READY_TIMEOUT_SECS}s" >&2
    exit 1
  fi
  sleep 0.1
done
ENDPOINT="$(sed -n 's/^keygate: Seam-compatible API at //p' "$WORK/server.stdout")"
KEY_FILE="$WORK/data/sandbox-api-key"
[[ -n "$ENDPOINT" && -s "$KEY_FILE" ]] || {
  echo "seam-sdk/check.sh: could not read the Seam endpoint or the sandbox key from keygate's output" >&2
  exit 1
}
# The seam_ form of the sandbox key (docs/seam-compatibility.md): `kg_<id>_<secret>` is
# `seam_test<id>_<secret>` for a sandbox workspace.
KG_KEY="$(tr -d '\n' <"$KEY_FILE")"
SEAM_KEY="seam_test${KG_KEY#kg_}"
printed="$(sed -n 's/^keygate: the same key for the Seam-compatible API: //p' "$WORK/server.stdout")"
[[ "$printed" == "$SEAM_KEY" ]] || {
  echo "seam-sdk/check.sh: the seam_ key keygate printed is not the documented form of its key" >&2
  exit 1
}
step "keygate ready: Seam-compatible API at $ENDPOINT"

# --- 3. The quick start -----------------------------------------------------------------------
# The seed's dates (August 2025) moved to tomorrow and three days later, nothing else changed.
STARTS="$(date -u -d '+1 day' +%Y-%m-%dT15:00:00.000Z)"
ENDS="$(date -u -d '+4 day' +%Y-%m-%dT11:00:00.000Z)"
future() { sed "s/2025-08-01T15:00:00.000Z/$STARTS/; s/2025-08-04T11:00:00.000Z/$ENDS/" "$1"; }
future "$HERE/quickstart.py" >"$WORK/quickstart.py"
future "$HERE/quickstart.mjs" >"$RUN_MJS"

export SEAM_ENDPOINT="$ENDPOINT" SEAM_API_KEY="$SEAM_KEY"
unset SEAM_API_URL SEAM_PERSONAL_ACCESS_TOKEN SEAM_WORKSPACE_ID

step "running quickstart.py (PyPI seam 3.18.0)"
"$VENV/bin/python" "$WORK/quickstart.py"

step "running quickstart.mjs (npm seam 1.245.0)"
# Next to node_modules, so `import "seam"` resolves to the pinned package.
node "$RUN_MJS"

if command -v jq >/dev/null && command -v curl >/dev/null; then
  step "running quickstart.sh (the seed's cURL, with jq)"
  future "$HERE/quickstart.sh" >"$WORK/quickstart.sh"
  acs_system_id="$(curl -s "$SEAM_ENDPOINT/acs/systems/list" -H "Authorization: Bearer $SEAM_API_KEY" |
    jq -r '.acs_systems[] | select(.external_type == "salto_space_system") | .acs_system_id')" \
    bash "$WORK/quickstart.sh"
else
  step "quickstart.sh skipped: the seed's cURL needs curl and jq"
fi

step "contract.mjs: every route's replies against @seamapi/types' OpenAPI"
node "$HERE/contract.mjs"

step "OK: the seed's Python and JavaScript quick starts ran against Keygate; replies match Seam's schemas"
