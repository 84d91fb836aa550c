#!/usr/bin/env bash
# Validates deploy/ offline: the Dockerfile, the plain Kubernetes manifests and the Helm chart.
#
#   deploy/check.sh
#
# Tools are pinned (requirements-check.txt, requirements-helm.txt) and installed into
# deploy/.venv on first run or when a pin changes; later runs reuse it and need no network.
#
#   1. shellcheck on this script; hadolint on deploy/Dockerfile
#   2. yamllint (deploy/.yamllint, strict) on deploy/kubernetes and the chart's values.yaml and
#      Chart.yaml (templates are Go templates: their rendered output is validated instead)
#   3. kubernetes-validate (bundled OpenAPI schemas, strict: unknown fields fail) on every
#      manifest in deploy/kubernetes, for the oldest and newest Kubernetes versions in KUBE_VERSIONS
#   4. kubectl kustomize deploy/kubernetes, validated the same way (skipped without kubectl)
#   5. the Helm engine (helm-python-sdk): `helm lint --strict`, then the chart rendered in both
#      modes and more value sets (render_chart.py), each validated with kubernetes-validate
#   6. chart_defaults_test.py: the chart's defaults equal the plain manifests; split mode, hooks
#      and the chart's guards (without the Helm engine, only its values-level tests run)
#
# Exits non-zero on the first failure. Environment:
#   PYTHON                      interpreter for the venv (default python3; 3.10 or newer)
#   KEYGATE_CHECK_REQUIRE_HELM  set to 1 to fail, instead of falling back, without the Helm engine
set -euo pipefail

DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$DEPLOY"
VENV="$DEPLOY/.venv"
PYTHON="${PYTHON:-python3}"
# Oldest supported (Chart.yaml kubeVersion; lifecycle.preStop.sleep) and newest bundled schema.
KUBE_VERSIONS=(1.30.0 1.37.0)
PIP_FLAGS=(--disable-pip-version-check --no-input --quiet --only-binary=:all: --retries 1 --timeout 30)

started=$SECONDS
step() { printf '\n==> %s\n' "$*"; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

step "Pinned tools in deploy/.venv"
want="$(sha256sum <requirements-check.txt | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.check-stamp" 2>/dev/null)" != "$want" ]]; then
  echo "creating $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install "${PIP_FLAGS[@]}" -r requirements-check.txt
  echo "$want" >"$VENV/.check-stamp"
else
  echo "up to date ($VENV)"
fi
helm_want="$(sha256sum requirements-helm.txt | cut -d' ' -f1)"
if [[ "$(cat "$VENV/.helm-stamp" 2>/dev/null)" != "$helm_want" ]]; then
  # Its own step: where no wheel fits this platform the check falls back to values-only tests.
  if "$VENV/bin/pip" install "${PIP_FLAGS[@]}" -r requirements-helm.txt; then
    echo "$helm_want" >"$VENV/.helm-stamp"
  else
    echo "could not install the Helm engine (requirements-helm.txt)" >&2
  fi
fi
PY="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"
have_helm=0
if "$PY" -c 'import helm_python' 2>/dev/null; then
  have_helm=1
  echo "Helm engine: $("$PY" -c 'import helm_python as h; print("helm-python-sdk", h.__version__, "(Helm", h.helm_sdk_version() + ")")')"
elif [[ "${KEYGATE_CHECK_REQUIRE_HELM:-0}" == 1 ]]; then
  echo "KEYGATE_CHECK_REQUIRE_HELM=1 but the Helm engine is not available" >&2
  exit 1
else
  echo "Helm engine: NOT AVAILABLE - chart rendering is skipped; only values-level tests run"
fi
echo "$(yamllint --version), kubernetes-validate $(kubernetes-validate --version), $(hadolint --version), shellcheck $(shellcheck --version | sed -n 's/^version: //p')"

step "shellcheck deploy/check.sh"
shellcheck check.sh
echo "clean"

step "hadolint deploy/Dockerfile"
hadolint Dockerfile
echo "clean"

step "yamllint (strict)"
yaml_files=(kubernetes/*.yaml helm/keygate/values.yaml helm/keygate/Chart.yaml)
yamllint --strict -c .yamllint "${yaml_files[@]}"
printf '  %s\n' "${yaml_files[@]}"

# Manifests in deploy/kubernetes: everything but the kustomization itself.
manifests=()
for f in kubernetes/*.yaml; do
  [[ "$(basename "$f")" == kustomization.yaml ]] || manifests+=("$f")
done

validate() { # validate LABEL FILE... : kubernetes-validate --strict for each version in KUBE_VERSIONS
  local label=$1 version
  shift
  for version in "${KUBE_VERSIONS[@]}"; do
    kubernetes-validate --strict --quiet -k "$version" "$@"
    echo "  $label: valid for Kubernetes $version (strict)"
  done
}

step "kubernetes-validate deploy/kubernetes"
printf '  %s\n' "${manifests[@]}"
validate "plain manifests" "${manifests[@]}"

step "kubectl kustomize deploy/kubernetes"
if command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize kubernetes >"$WORK/kustomized.yaml"
  echo "  built $(grep -c '^kind:' "$WORK/kustomized.yaml") objects"
  validate "kustomize output" "$WORK/kustomized.yaml"
else
  echo "  kubectl not found: skipped"
fi

if [[ $have_helm == 1 ]]; then
  step "Helm chart: lint and render (helm lint --strict / helm template)"
  "$PY" render_chart.py "$WORK/rendered"
  step "kubernetes-validate rendered chart"
  # ServiceMonitor (a CRD) has no bundled schema: kubernetes-validate warns and the tests
  # check its shape. --quiet keeps the warning, hides the per-object lines.
  for f in "$WORK"/rendered/*.yaml; do
    validate "$(basename "$f" .yaml)" "$f"
  done
else
  step "Helm chart: SKIPPED (no Helm engine); values-level tests only"
fi

step "chart_defaults_test.py"
"$PY" chart_defaults_test.py

step "deploy/check.sh passed in $((SECONDS - started)) s"
