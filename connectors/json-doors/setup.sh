#!/usr/bin/env bash
# Installs the json-doors reference connector into connectors/.venv, so that
#   connectors/.venv/bin/keygate-json-doors --state doors.json --listen 127.0.0.1:50070
# starts it. Idempotent: the pinned requirements are (re)installed only when requirements.txt or
# the interpreter changed (a stamp file in the venv), the package (editable, --no-deps)
# only when pyproject.toml changed. Quiet unless -v; errors go to stderr and the exit status is non-zero.
#
# Environment:
#   PYTHON   interpreter for the venv (default python3; the pins are tested on 3.11)
set -euo pipefail

VERBOSE=0
if [[ "${1:-}" == "-v" ]]; then VERBOSE=1; elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [-v]" >&2
  exit 2
fi

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$(dirname "$HERE")/.venv"
PYTHON="${PYTHON:-python3}"
say() { if ((VERBOSE)); then echo "setup.sh: $*"; fi; }
quiet=(--quiet)
if ((VERBOSE)); then quiet=(); fi

if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi

stamp="$(cat "$HERE/requirements.txt" <("$VENV/bin/python" --version) | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)" != "$stamp" ]]; then
  say "installing requirements.txt"
  "$VENV/bin/python" -m pip install "${quiet[@]}" --disable-pip-version-check --no-input \
    -r "$HERE/requirements.txt"
  "$VENV/bin/python" -m pip check --disable-pip-version-check >/dev/null
  echo "$stamp" >"$VENV/.requirements.sha256"
else
  say "requirements.txt unchanged, not reinstalling"
fi

# The package is installed editable, so code changes need no reinstall; only a changed
# pyproject.toml (or a fresh set of requirements) does.
pkg_stamp="$(cat "$HERE/pyproject.toml" <(echo "$stamp") | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$VENV/.json-doors.sha256" 2>/dev/null || true)" != "$pkg_stamp" ]]; then
  say "installing keygate-json-doors (editable, no deps)"
  "$VENV/bin/python" -m pip install "${quiet[@]}" --disable-pip-version-check --no-input \
    --no-deps --no-build-isolation -e "$HERE" >/dev/null
  echo "$pkg_stamp" >"$VENV/.json-doors.sha256"
else
  say "keygate-json-doors already installed"
fi
say "ready: $VENV/bin/keygate-json-doors"
