#!/usr/bin/env python3
"""Lints and renders the Helm chart offline with the Helm engine itself.

No `helm` CLI for Linux is published on the package registries this project can reach, but
the PyPI package helm-python-sdk bundles the Helm v4 Go library (libhelm_c) and exposes its
offline `lint` and `render` (what `helm lint` and `helm template` run). deploy/check.sh
installs it into deploy/.venv.

    python deploy/render_chart.py OUT_DIR

lints the chart with each scenario's values (strict: warnings fail), then writes OUT_DIR/<scenario>.yaml for every
scenario in SCENARIOS, ready for kubernetes-validate. chart_defaults_test.py imports
`render` from here for its rendered-chart tests.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import yaml

CHART = pathlib.Path(__file__).resolve().parent / "helm" / "keygate"
# Same release name as the plain manifests' object names, so the defaults render identically.
RELEASE = "keygate"
NAMESPACE = "keygate"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion).
KUBE_VERSION = "v1.30.0"

# Value sets rendered for kubernetes-validate. Each must render; the guards that must refuse
# a render are tested in chart_defaults_test.py.
SCENARIOS: dict[str, dict[str, Any]] = {
    "allinone-defaults": {},
    "split-defaults": {"mode": "split"},
    "split-fixed-replicas": {
        "mode": "split",
        "gateway": {"autoscaling": {"enabled": False}, "replicas": 3},
        "orchestrator": {"autoscaling": {"enabled": False}, "pdb": {"enabled": False}},
        "delivery": {
            "autoscaling": {"enabled": False, "targetMemoryUtilizationPercentage": 80}
        },
    },
    "allinone-everything-on": {
        "image": {"digest": "sha256:" + "0" * 64},
        "imagePullSecrets": [{"name": "registry"}],
        "allInOne": {"autoscaling": {"targetMemoryUtilizationPercentage": 80}},
        "config": {"KEYGATE_PUBLIC_URL": "https://keys.example.com", "KEYGATE_RATE_LIMIT_RPS": 50},
        "extraEnv": [{"name": "OTEL_SERVICE_NAME", "value": "keygate"}],
        "serviceAccount": {"annotations": {"example.com/role": "keygate"}},
        "service": {"annotations": {"example.com/lb": "internal"}},
        "podAnnotations": {"example.com/team": "access"},
        "podLabels": {"example.com/tier": "api"},
        "priorityClassName": "high",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "keygate", "effect": "NoSchedule"}],
        "migration": {"serviceAccountName": "keygate-migrator", "podAnnotations": {"sidecar.istio.io/inject": "false"}},
        "networkPolicy": {
            "ingress": {
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}],
                "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            },
            "egress": {
                "dns": {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]},
                "postgres": {"to": [{"ipBlock": {"cidr": "10.0.12.0/24"}}]},
                "redis": {"to": [{"podSelector": {"matchLabels": {"app": "redis"}}}]},
                "extra": [{"ports": [{"port": 443, "protocol": "TCP"}]}],
            },
        },
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    },
    "single-replica-no-redis": {
        "secrets": {
            "redisUrl": {"secretName": ""},
            "adminToken": {"secretName": ""},
            "smtpUrl": {"secretName": ""},
            "smsAuthToken": {"secretName": ""},
            "cacheKey": {"secretName": ""},
            "credentialsKey": {"secretName": ""},
        },
        "allInOne": {"replicas": 1, "autoscaling": {"enabled": False}},
        "networkPolicy": {"enabled": False},
        "migration": {"enabled": False},
        "serviceAccount": {"create": False},
    },
}


def _helm():
    import helm_python  # imported late: only check.sh's venv has it

    return helm_python


def lint(values: dict[str, Any] | None = None) -> list[str]:
    """Problems `helm lint --strict` reports (warnings and errors; info is ignored)."""
    report = _helm().lint(str(CHART), values or None, strict=True, kube_version=KUBE_VERSION)
    problems = [f"{m['path']}: {m['error']}" for m in report.get("messages", []) if m["severity"] >= 2]
    problems += list(report.get("errors") or [])
    return problems


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's objects for `values` (hooks included, NOTES.txt left out), in template order."""
    with _helm().Chart.load(str(CHART)) as chart:
        manifests = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
    objects = []
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(manifests[path]):
            if doc:
                objects.append(doc)
    return objects


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = pathlib.Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, values in SCENARIOS.items():
        problems = lint(values)
        if problems:
            print(f"helm lint --strict ({name}) found:", *problems, sep="\n  ", file=sys.stderr)
            return 1
    print(f"  helm lint --strict (kube {KUBE_VERSION}) with the values of every scenario: clean")
    for name, values in SCENARIOS.items():
        objects = render(values)
        (out / f"{name}.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
        kinds = ", ".join(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
        print(f"  rendered {name}: {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
