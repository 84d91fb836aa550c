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
RUN_MJS="$HERE/.quickstart.run.mjs"
CHECK_NAME="seam-sdk/check.sh"
# shellcheck source=../../tools/lib/keygate-check.sh
source "$REPO/tools/lib/keygate-check.sh"
CLEANUP_EXTRA+=('rm -f "$RUN_MJS"')

# --- 1. The SDKs ------------------------------------------------------------------------------
step "python: seam 3.18.0 and its pinned dependencies into .venv"
pip_install_pinned "$VENV" "$HERE/requirements.txt" "$PYTHON"

step "javascript: seam 1.245.0, @seamapi/types 1.977.0 and ajv: npm install (package-lock.json)"
npm_install_locked "$HERE"

# --- 2. The server ----------------------------------------------------------------------------
start_keygate --webhook-allow-loopback true
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
