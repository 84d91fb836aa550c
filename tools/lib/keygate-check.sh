# Shared by the scripts that run clients against the real keygate binary (examples/check.sh,
# tests/seam-sdk/check.sh). Source it after setting:
#   CHECK_NAME   how messages name the script (e.g. "check.sh")
#   REPO         the repository's root
# It sets WORK (a temp dir, removed on exit), KEYGATE_BIN (default target/debug/keygate),
# SERVER_PID, and defines step, pip_install_pinned, npm_install_locked and start_keygate.
# On exit the server is stopped and, when the script failed, the end of its log is printed.

DEFAULT_BIN="$REPO/target/debug/keygate"
KEYGATE_BIN="${KEYGATE_BIN:-$DEFAULT_BIN}"
READY_TIMEOUT_SECS=60
START=$SECONDS
WORK="$(mktemp -d "${TMPDIR:-/tmp}/keygate-check.XXXXXX")"
SERVER_PID=""
# More to undo on exit: a script appends commands (run with eval, in order).
CLEANUP_EXTRA=()

step() { echo "$CHECK_NAME [$((SECONDS - START))s] $*"; }

keygate_check_cleanup() {
  local rc=$?
  local extra
  for extra in "${CLEANUP_EXTRA[@]}"; do
    eval "$extra" || true
  done
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -f "$WORK/server.stderr" ]]; then
    echo "$CHECK_NAME: FAILED (exit $rc); last lines of the keygate log:" >&2
    tail -n 40 "$WORK/server.stderr" >&2 || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap keygate_check_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# pip_install_pinned VENV REQUIREMENTS [PYTHON]: the pinned requirements into the venv,
# reinstalled only when the requirements file or the interpreter changed.
pip_install_pinned() {
  local venv=$1 reqs=$2 python=${3:-python3} stamp
  if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
  fi
  stamp="$(cat "$reqs" <("$venv/bin/python" --version) | sha256sum | cut -d' ' -f1)"
  if [[ "$(cat "$venv/.requirements.sha256" 2>/dev/null || true)" != "$stamp" ]]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$reqs"
    "$venv/bin/python" -m pip check --disable-pip-version-check >/dev/null
    echo "$stamp" >"$venv/.requirements.sha256"
  fi
}

# npm_install_locked DIR: `npm install` in DIR, failing when it changes package-lock.json (the
# lock is out of step with package.json).
npm_install_locked() {
  local dir=$1 before
  before="$WORK/package-lock.$(basename "$dir").before"
  cp "$dir/package-lock.json" "$before"
  (cd "$dir" && npm install --no-audit --no-fund --loglevel=error)
  if ! cmp -s "$before" "$dir/package-lock.json"; then
    echo "$CHECK_NAME: npm install changed $dir/package-lock.json: it is out of step with" \
      "package.json; review and commit the new lock file" >&2
    exit 1
  fi
}

# start_keygate [FLAG...]: builds the default binary when it is missing, starts `keygate serve`
# on free loopback ports with its data in $WORK/data and none of the caller's KEYGATE_*
# settings (embedded SQLite, sandbox bootstrap), and waits for `keygate: ready`. Its output is in
# $WORK/server.stdout and $WORK/server.stderr.
start_keygate() {
  if [[ ! -x "$KEYGATE_BIN" ]]; then
    if [[ "$KEYGATE_BIN" != "$DEFAULT_BIN" ]]; then
      echo "$CHECK_NAME: KEYGATE_BIN=$KEYGATE_BIN is not an executable file" >&2
      exit 1
    fi
    step "building keygate (cargo build -p keygate)"
    (cd "$REPO" && cargo build --quiet -p keygate)
  fi
  step "starting $KEYGATE_BIN serve (data in a temp dir, free loopback ports)"
  local unset_env=() name deadline
  while IFS= read -r name; do
    unset_env+=(-u "$name")
  done < <(compgen -e | grep '^KEYGATE_' || true)
  env "${unset_env[@]}" NO_COLOR=1 "$KEYGATE_BIN" serve \
    --data-dir "$WORK/data" \
    --grpc-addr 127.0.0.1:0 \
    --http-addr 127.0.0.1:0 \
    --drain-secs 2 \
    "$@" \
    >"$WORK/server.stdout" 2>"$WORK/server.stderr" &
  SERVER_PID=$!
  # `keygate: ready` (stdout) comes after the listen lines, which carry the ports it was given.
  deadline=$((SECONDS + READY_TIMEOUT_SECS))
  until grep -q '^keygate: ready' "$WORK/server.stdout"; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "$CHECK_NAME: keygate exited before it was ready" >&2
      cat "$WORK/server.stdout" >&2
      exit 1
    fi
    if ((SECONDS > deadline)); then
      echo "$CHECK_NAME: keygate not ready after ${READY_TIMEOUT_SECS}s" >&2
      exit 1
    fi
    sleep 0.1
  done
}
