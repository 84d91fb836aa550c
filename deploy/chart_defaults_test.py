#!/usr/bin/env python3
"""Keeps the Helm chart, the plain manifests and the Dockerfile in step.

Run by deploy/check.sh (python deploy/chart_defaults_test.py -v). Needs PyYAML only for the
first group of tests; the rest need the Helm engine (helm-python-sdk, see render_chart.py)
and are skipped without it.

- ValuesMatchPlainManifests: the chart's values.yaml defaults against deploy/kubernetes
  (image, ports, probes, env names, secrets, replicas/HPA, resources, drain and grace, hardening)
  and against the Dockerfile (user, ports, entrypoint). Works without Helm.
- RenderedDefaultsEqualPlainManifests: the chart rendered with its defaults is object for object
  the plain manifests, once Helm's own labels and annotations are set aside.
- RenderedChartInvariants / ChartGuards: split mode, optional parts (the ServiceMonitor equals
  deploy/kubernetes/servicemonitor.yaml), and the combinations the chart must refuse.
"""

from __future__ import annotations

import copy
import difflib
import pathlib
import sys
import unittest
from typing import Any

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
CHART = DEPLOY / "helm" / "keygate"
PLAIN = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
sys.path.insert(0, str(DEPLOY))

try:
    import helm_python  # noqa: F401  (only to know whether the Helm engine is here)

    import render_chart

    HAVE_HELM = True
except ImportError:
    HAVE_HELM = False

GRPC_PORT = 50051
HTTP_PORT = 8080
SECRET_ENV = {
    "KEYGATE_DATABASE_URL",
    "KEYGATE_REDIS_URL",
    "KEYGATE_ADMIN_TOKEN",
    "KEYGATE_INSTANT_KEY_SECRET",
    "KEYGATE_PAGE_TOKEN_KEY",
    "KEYGATE_CACHE_KEY",
}
# Credentials of the Instant Key senders: from the same Secret, `optional: true`, and not given to
# the orchestrator role, which never sends.
SENDER_SECRET_ENV = {"KEYGATE_SMTP_URL", "KEYGATE_SMS_AUTH_TOKEN"}
# Optional keys every role reads (`optional: true`): the credentials key of connected systems.
OPTIONAL_SECRET_ENV = {"KEYGATE_CREDENTIALS_KEY"}
# Labels and annotations that only Helm adds; everything else must match exactly.
HELM_ONLY_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by"}
HELM_ONLY_ANNOTATION_PREFIXES = ("helm.sh/", "checksum/")


def load_yaml(path: pathlib.Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def values() -> dict[str, Any]:
    return load_yaml(CHART / "values.yaml")


def chart() -> dict[str, Any]:
    return load_yaml(CHART / "Chart.yaml")


def plain_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """The objects kustomization.yaml lists, by (kind, name)."""
    kustomization = load_yaml(PLAIN / "kustomization.yaml")
    objects = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((PLAIN / resource).read_text()):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in objects, f"{key} is defined twice"
                objects[key] = doc
    return objects


def by_kind(objects, kind: str) -> list[dict[str, Any]]:
    items = objects.values() if isinstance(objects, dict) else objects
    return [o for o in items if o["kind"] == kind]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per pod"
    return containers[0]


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in c.get("env", [])}


def drain_secs(config: dict[str, Any]) -> int:
    return int(config.get("KEYGATE_DRAIN_SECS") or 20)


def normalize(obj: dict[str, Any]) -> dict[str, Any]:
    """Sets aside what only Helm adds, so a rendered object compares with its plain twin."""
    obj = copy.deepcopy(obj)

    def clean(meta: dict[str, Any]) -> None:
        labels = meta.get("labels") or {}
        for key in HELM_ONLY_LABELS:
            labels.pop(key, None)
        annotations = meta.get("annotations") or {}
        for key in list(annotations):
            if key.startswith(HELM_ONLY_ANNOTATION_PREFIXES):
                del annotations[key]
        for field in ("labels", "annotations"):
            if field in meta and not meta[field]:
                del meta[field]

    clean(obj["metadata"])
    template = obj.get("spec", {}).get("template")
    if template:
        clean(template["metadata"])
    return obj


def dump(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=True)


class ValuesMatchPlainManifests(unittest.TestCase):
    """values.yaml defaults against deploy/kubernetes and the Dockerfile. No Helm needed."""

    @classmethod
    def setUpClass(cls):
        cls.values = values()
        cls.chart = chart()
        cls.plain = plain_objects()
        cls.deployment = cls.plain[("Deployment", "keygate")]
        cls.job = cls.plain[("Job", "keygate-migrate")]

    def test_default_mode_is_all_in_one_and_plain_manifests_are_that(self):
        self.assertEqual(self.values["mode"], "allInOne")
        self.assertEqual(len(by_kind(self.plain, "Deployment")), 1)
        roles = env_of(container(self.deployment))["KEYGATE_ROLES"]["value"]
        self.assertEqual(roles, "gateway,orchestrator,delivery")

    def test_image(self):
        image = self.values["image"]
        tag = image["tag"] or self.chart["appVersion"]
        expected = f"{image['repository']}:{tag}"
        self.assertEqual(container(self.deployment)["image"], expected)
        self.assertEqual(container(self.job)["image"], expected)
        self.assertEqual(container(self.deployment)["imagePullPolicy"], image["pullPolicy"])
        kustomization = load_yaml(PLAIN / "kustomization.yaml")
        self.assertEqual(kustomization["images"], [{"name": image["repository"], "newTag": tag}])

    def test_ports(self):
        ports = {p["name"]: p["containerPort"] for p in container(self.deployment)["ports"]}
        self.assertEqual(ports, {"grpc": GRPC_PORT, "http": HTTP_PORT})
        service = self.plain[("Service", "keygate")]
        service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
        self.assertEqual(
            service_ports,
            {
                "grpc": (self.values["service"]["ports"]["grpc"], "grpc"),
                "http": (self.values["service"]["ports"]["http"], "http"),
            },
        )
        self.assertEqual(service["spec"]["type"], self.values["service"]["type"])

    def test_probes(self):
        c = container(self.deployment)
        readiness = dict(c["readinessProbe"])
        self.assertEqual(readiness.pop("grpc"), {"port": GRPC_PORT})
        self.assertEqual(readiness, self.values["probes"]["readiness"])
        liveness = dict(c["livenessProbe"])
        self.assertEqual(liveness.pop("httpGet"), {"path": "/livez", "port": "http"})
        self.assertEqual(liveness, self.values["probes"]["liveness"])

    def test_env_names_and_secret_refs(self):
        env = env_of(container(self.deployment))
        self.assertEqual(
            set(env), {"KEYGATE_ROLES"} | SECRET_ENV | SENDER_SECRET_ENV | OPTIONAL_SECRET_ENV
        )
        secrets = self.values["secrets"]
        refs = {
            "KEYGATE_DATABASE_URL": secrets["databaseUrl"],
            "KEYGATE_REDIS_URL": secrets["redisUrl"],
            "KEYGATE_ADMIN_TOKEN": secrets["adminToken"],
            "KEYGATE_INSTANT_KEY_SECRET": secrets["instantKeySecret"],
            "KEYGATE_PAGE_TOKEN_KEY": secrets["pageTokenKey"],
            "KEYGATE_CACHE_KEY": secrets["cacheKey"],
        }
        optional_refs = {
            "KEYGATE_SMTP_URL": secrets["smtpUrl"],
            "KEYGATE_SMS_AUTH_TOKEN": secrets["smsAuthToken"],
            "KEYGATE_CREDENTIALS_KEY": secrets["credentialsKey"],
        }
        self.assertEqual(set(optional_refs), SENDER_SECRET_ENV | OPTIONAL_SECRET_ENV)
        for name, ref in refs.items():
            self.assertEqual(
                env[name]["valueFrom"]["secretKeyRef"],
                {"name": ref["secretName"], "key": ref["key"]},
                name,
            )
        for name, ref in optional_refs.items():
            self.assertEqual(
                env[name]["valueFrom"]["secretKeyRef"],
                {"name": ref["secretName"], "key": ref["key"], "optional": True},
                name,
            )
        # The plain manifests' Secret is named `keygate` with these keys (secret.example.yaml);
        # the optional ones are there as comments, so that applying the example sends nothing.
        example_path = PLAIN / "secret.example.yaml"
        example = load_yaml(example_path)
        self.assertEqual(example["metadata"]["name"], "keygate")
        self.assertEqual(set(example["stringData"]), {r["key"] for r in refs.values()})
        for ref in optional_refs.values():
            self.assertRegex(example_path.read_text(), rf"(?m)^  # {ref['key']}: ")
        job_env = env_of(container(self.job))
        self.assertEqual(job_env["KEYGATE_DATABASE_URL"], env["KEYGATE_DATABASE_URL"])

    def test_config(self):
        config = {k: str(v) for k, v in self.values["config"].items() if v not in (None, "")}
        configmap = self.plain[("ConfigMap", "keygate")]
        self.assertEqual(configmap["data"], config)
        self.assertEqual(config["KEYGATE_MIGRATE_ON_START"], "false")
        self.assertEqual(config["KEYGATE_BOOTSTRAP_SANDBOX"], "false")
        self.assertEqual(config["KEYGATE_LOG_FORMAT"], "json")
        envfrom = container(self.deployment)["envFrom"]
        self.assertEqual(envfrom, [{"configMapRef": {"name": "keygate"}}])
        job_env = env_of(container(self.job))
        for key in ("KEYGATE_LOG_FORMAT", "KEYGATE_LOG"):
            self.assertEqual(job_env[key]["value"], config[key])

    def test_replicas_and_autoscaling(self):
        scaling = self.values["allInOne"]["autoscaling"]
        self.assertTrue(scaling["enabled"])
        self.assertNotIn("replicas", self.deployment["spec"], "the HPA owns the replica count")
        hpa = self.plain[("HorizontalPodAutoscaler", "keygate")]["spec"]
        self.assertEqual(hpa["scaleTargetRef"], {"apiVersion": "apps/v1", "kind": "Deployment", "name": "keygate"})
        self.assertEqual((hpa["minReplicas"], hpa["maxReplicas"]), (scaling["minReplicas"], scaling["maxReplicas"]))
        cpu = [m for m in hpa["metrics"] if m["resource"]["name"] == "cpu"]
        self.assertEqual(cpu[0]["resource"]["target"]["averageUtilization"], scaling["targetCPUUtilizationPercentage"])
        self.assertEqual(len(hpa["metrics"]), 1 + bool(scaling["targetMemoryUtilizationPercentage"]))
        self.assertEqual(hpa["behavior"], self.values["autoscalingBehavior"])
        self.assertEqual(self.values["allInOne"]["replicas"], scaling["minReplicas"])

    def test_pdb(self):
        pdb = self.plain[("PodDisruptionBudget", "keygate")]["spec"]
        self.assertTrue(self.values["allInOne"]["pdb"]["enabled"])
        self.assertEqual(pdb["maxUnavailable"], self.values["allInOne"]["pdb"]["maxUnavailable"])
        self.assertEqual(pdb["selector"], self.deployment["spec"]["selector"])

    def test_resources(self):
        self.assertEqual(container(self.deployment)["resources"], self.values["allInOne"]["resources"])
        self.assertEqual(container(self.job)["resources"], self.values["migration"]["resources"])

    def test_drain_and_grace(self):
        pod = self.deployment["spec"]["template"]["spec"]
        pre_stop = container(self.deployment)["lifecycle"]["preStop"]
        self.assertEqual(pre_stop, {"sleep": {"seconds": self.values["preStopSleepSeconds"]}})
        self.assertEqual(pod["terminationGracePeriodSeconds"], self.values["terminationGracePeriodSeconds"])
        drain = drain_secs(self.values["config"])
        self.assertEqual(drain, int(self.plain[("ConfigMap", "keygate")]["data"]["KEYGATE_DRAIN_SECS"]))
        self.assertGreater(pod["terminationGracePeriodSeconds"], self.values["preStopSleepSeconds"] + drain)

    def test_hardening(self):
        for workload in (self.deployment, self.job):
            pod = workload["spec"]["template"]["spec"]
            self.assertEqual(pod["securityContext"], self.values["podSecurityContext"])
            self.assertFalse(pod["automountServiceAccountToken"])
            self.assertEqual(container(workload)["securityContext"], self.values["securityContext"])
        self.assertTrue(self.values["podSecurityContext"]["runAsNonRoot"])
        self.assertTrue(self.values["securityContext"]["readOnlyRootFilesystem"])
        self.assertEqual(self.values["securityContext"]["capabilities"]["drop"], ["ALL"])

    def test_migration_job(self):
        self.assertTrue(self.values["migration"]["enabled"])
        c = container(self.job)
        self.assertEqual(c["args"], ["migrate"])
        spec = self.job["spec"]
        self.assertEqual(spec["backoffLimit"], self.values["migration"]["backoffLimit"])
        self.assertEqual(spec["activeDeadlineSeconds"], self.values["migration"]["activeDeadlineSeconds"])
        self.assertEqual(spec["template"]["spec"]["restartPolicy"], "Never")
        self.assertNotIn("serviceAccountName", spec["template"]["spec"])
        self.assertEqual(container(self.deployment)["args"], ["serve"])

    def test_network_policy_ports(self):
        self.assertTrue(self.values["networkPolicy"]["enabled"])
        policy = self.plain[("NetworkPolicy", "keygate")]["spec"]
        ingress_ports = sorted(p["port"] for rule in policy["ingress"] for p in rule["ports"])
        self.assertEqual(ingress_ports, [HTTP_PORT, GRPC_PORT])
        egress_ports = sorted({p["port"] for rule in policy["egress"] for p in rule["ports"]})
        egress = self.values["networkPolicy"]["egress"]
        self.assertEqual(egress_ports, sorted({53, egress["postgres"]["port"], egress["redis"]["port"]}))

    def test_service_monitor_off_by_default(self):
        self.assertFalse(self.values["metrics"]["serviceMonitor"]["enabled"])
        self.assertFalse(by_kind(self.plain, "ServiceMonitor"))
        self.assertEqual(self.values["metrics"]["serviceMonitor"]["path"], "/metrics")
        self.assertEqual(self.values["networkPolicy"]["ingress"]["metricsFrom"], [])

    def test_optional_examples_point_at_the_plain_objects(self):
        """servicemonitor.yaml and ingress.example.yaml are not in the kustomization."""
        kustomization = load_yaml(PLAIN / "kustomization.yaml")
        self.assertNotIn("servicemonitor.yaml", kustomization["resources"])
        self.assertNotIn("ingress.example.yaml", kustomization["resources"])
        service = self.plain[("Service", "keygate")]
        monitor = load_yaml(PLAIN / "servicemonitor.yaml")
        self.assertLessEqual(monitor["spec"]["selector"]["matchLabels"].items(), service["metadata"]["labels"].items())
        self.assertEqual(monitor["spec"]["endpoints"][0]["port"], "http")
        ingress = load_yaml(PLAIN / "ingress.example.yaml")
        backends = [p["backend"]["service"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
        self.assertEqual(backends, [{"name": service["metadata"]["name"], "port": {"name": "http"}}])
        self.assertEqual([p["path"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]], ["/ik"])

    def test_plain_manifests_are_namespace_less(self):
        for (kind, name), obj in self.plain.items():
            self.assertNotIn("namespace", obj["metadata"], f"{kind}/{name}")

    def test_dockerfile_matches(self):
        text = DOCKERFILE.read_text()
        uid = self.values["podSecurityContext"]["runAsUser"]
        self.assertRegex(text, rf"(?m)^USER {uid}:{self.values['podSecurityContext']['runAsGroup']}$")
        self.assertRegex(text, rf"(?m)^EXPOSE {GRPC_PORT} {HTTP_PORT}$")
        self.assertRegex(text, r'(?m)^ENTRYPOINT \["/usr/local/bin/keygate"\]$')
        self.assertRegex(text, r'(?m)^CMD \["serve"\]$')
        self.assertRegex(text, r"(?m)^ENV KEYGATE_DATA_DIR=/var/lib/keygate$")
        self.assertRegex(text, r"(?m)^FROM rust:1\.95-bookworm AS builder$")
        self.assertRegex(text, r"(?m)^FROM gcr\.io/distroless/cc-debian12:nonroot$")
        self.assertIn("cargo build --release --locked -p keygate", text)


@unittest.skipUnless(HAVE_HELM, "Helm engine (helm-python-sdk) not installed")
class RenderedDefaultsEqualPlainManifests(unittest.TestCase):
    def test_objects_are_equal(self):
        rendered = {(o["kind"], o["metadata"]["name"]): normalize(o) for o in render_chart.render()}
        plain = {key: normalize(o) for key, o in plain_objects().items()}
        self.assertEqual(sorted(rendered), sorted(plain), "the same objects")
        for key in sorted(plain):
            if rendered[key] != plain[key]:
                diff = "".join(
                    difflib.unified_diff(
                        dump(plain[key]).splitlines(True),
                        dump(rendered[key]).splitlines(True),
                        "deploy/kubernetes",
                        "helm template (defaults)",
                    )
                )
                self.fail(f"{key[0]}/{key[1]} differs:\n{diff}")


@unittest.skipUnless(HAVE_HELM, "Helm engine (helm-python-sdk) not installed")
class RenderedChartInvariants(unittest.TestCase):
    def check_deployments(self, objects, vals):
        """What must hold for every Deployment the chart makes, whatever the values."""
        config = {**values()["config"], **vals.get("config", {})}
        for d in by_kind(objects, "Deployment"):
            name = d["metadata"]["name"]
            pod = d["spec"]["template"]["spec"]
            c = container(d)
            self.assertEqual(c["args"], ["serve"], name)
            self.assertEqual(c["livenessProbe"]["httpGet"], {"path": "/livez", "port": "http"}, name)
            self.assertIn("sleep", c["lifecycle"]["preStop"], name)
            self.assertGreater(
                pod["terminationGracePeriodSeconds"],
                c["lifecycle"]["preStop"]["sleep"]["seconds"] + drain_secs(config),
                name,
            )
            self.assertTrue(pod["securityContext"]["runAsNonRoot"], name)
            self.assertTrue(c["securityContext"]["readOnlyRootFilesystem"], name)
            self.assertEqual(c["securityContext"]["capabilities"]["drop"], ["ALL"], name)
            for e in c["env"]:
                if e["name"] in SECRET_ENV | SENDER_SECRET_ENV | OPTIONAL_SECRET_ENV:
                    self.assertIn("secretKeyRef", e["valueFrom"], f"{name}: {e['name']} must come from a Secret")
            selector = d["spec"]["selector"]["matchLabels"]
            labels = d["spec"]["template"]["metadata"]["labels"]
            self.assertLessEqual(selector.items(), labels.items(), name)
        deployments = {d["metadata"]["name"] for d in by_kind(objects, "Deployment")}
        for hpa in by_kind(objects, "HorizontalPodAutoscaler"):
            self.assertIn(hpa["spec"]["scaleTargetRef"]["name"], deployments)
        for pdb in by_kind(objects, "PodDisruptionBudget"):
            targets = [
                d for d in by_kind(objects, "Deployment")
                if d["spec"]["selector"]["matchLabels"] == pdb["spec"]["selector"]["matchLabels"]
            ]
            self.assertEqual(len(targets), 1, pdb["metadata"]["name"])
        for svc in by_kind(objects, "Service"):
            selected = [
                d for d in by_kind(objects, "Deployment")
                if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
            ]
            self.assertEqual(len(selected), 1, svc["metadata"]["name"])

    def test_every_scenario_renders_sound_objects(self):
        for name, vals in render_chart.SCENARIOS.items():
            with self.subTest(scenario=name):
                self.check_deployments(render_chart.render(vals), vals)

    def test_split_mode(self):
        objects = render_chart.render({"mode": "split"})
        deployments = {d["metadata"]["name"]: d for d in by_kind(objects, "Deployment")}
        self.assertEqual(set(deployments), {"keygate-gateway", "keygate-orchestrator", "keygate-delivery"})
        for role in ("gateway", "orchestrator", "delivery"):
            d = deployments[f"keygate-{role}"]
            c = container(d)
            self.assertEqual(env_of(c)["KEYGATE_ROLES"]["value"], role)
            self.assertEqual(d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"], role)
            self.assertEqual(c["resources"], values()[role]["resources"])
            ports = {p["name"] for p in c["ports"]}
            sender_env = SENDER_SECRET_ENV & set(env_of(c))
            self.assertEqual(sender_env, set() if role == "orchestrator" else SENDER_SECRET_ENV, role)
            self.assertLessEqual(OPTIONAL_SECRET_ENV, set(env_of(c)), f"{role} reads stored credentials")
            if role == "gateway":
                self.assertEqual(c["readinessProbe"]["grpc"], {"port": GRPC_PORT})
                self.assertEqual(ports, {"grpc", "http"})
            else:
                self.assertEqual(c["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "http"})
                self.assertEqual(ports, {"http"}, "only the gateway listens on gRPC")
        hpas = {h["metadata"]["name"]: h["spec"] for h in by_kind(objects, "HorizontalPodAutoscaler")}
        self.assertEqual(set(hpas), set(deployments))
        for role in ("gateway", "orchestrator", "delivery"):
            self.assertEqual(hpas[f"keygate-{role}"]["maxReplicas"], values()[role]["autoscaling"]["maxReplicas"])
        self.assertEqual(len(by_kind(objects, "PodDisruptionBudget")), 3)
        services = {s["metadata"]["name"]: s for s in by_kind(objects, "Service")}
        # The API address does not change with the mode.
        self.assertEqual(services["keygate"]["spec"]["selector"]["app.kubernetes.io/component"], "gateway")
        self.assertEqual({p["name"] for p in services["keygate-delivery"]["spec"]["ports"]}, {"http"})
        # The Instant Key pages are served by the delivery pods, on their HTTP port.
        self.assertEqual(services["keygate-delivery"]["spec"]["selector"]["app.kubernetes.io/component"], "delivery")

    def test_fixed_replicas_when_autoscaling_is_off(self):
        objects = render_chart.render(render_chart.SCENARIOS["split-fixed-replicas"])
        deployments = {d["metadata"]["name"]: d for d in by_kind(objects, "Deployment")}
        self.assertEqual(deployments["keygate-gateway"]["spec"]["replicas"], 3)
        self.assertEqual(deployments["keygate-orchestrator"]["spec"]["replicas"], 2)
        self.assertFalse(by_kind(objects, "HorizontalPodAutoscaler"))
        self.assertEqual(
            {p["metadata"]["name"] for p in by_kind(objects, "PodDisruptionBudget")},
            {"keygate-gateway", "keygate-delivery"},
        )

    def test_hooks(self):
        objects = render_chart.render()
        job = by_kind(objects, "Job")[0]
        annotations = job["metadata"]["annotations"]
        self.assertEqual(annotations["helm.sh/hook"], "pre-install,pre-upgrade")
        policy = next(o for o in by_kind(objects, "NetworkPolicy") if o["metadata"]["name"] == "keygate-migrate")
        self.assertEqual(policy["metadata"]["annotations"]["helm.sh/hook"], "pre-install,pre-upgrade")
        self.assertLess(
            int(policy["metadata"]["annotations"]["helm.sh/hook-weight"]), int(annotations["helm.sh/hook-weight"])
        )
        # A hook cannot depend on the release's ordinary objects: they do not exist yet on install.
        pod = job["spec"]["template"]["spec"]
        self.assertNotIn("serviceAccountName", pod)
        self.assertNotIn("envFrom", container(job))

    def test_everything_on(self):
        objects = render_chart.render(render_chart.SCENARIOS["allinone-everything-on"])
        deployment = by_kind(objects, "Deployment")[0]
        c = container(deployment)
        self.assertEqual(c["image"], "registry.example.com/keygate/keygate@sha256:" + "0" * 64)
        self.assertEqual(env_of(c)["OTEL_SERVICE_NAME"]["value"], "keygate")
        configmap = by_kind(objects, "ConfigMap")[0]
        self.assertEqual(configmap["data"]["KEYGATE_RATE_LIMIT_RPS"], "50")
        self.assertEqual(configmap["data"]["KEYGATE_PUBLIC_URL"], "https://keys.example.com")
        monitor = by_kind(objects, "ServiceMonitor")[0]
        self.assertEqual(monitor["apiVersion"], "monitoring.coreos.com/v1")
        self.assertEqual(monitor["metadata"]["labels"]["release"], "prometheus")
        self.assertEqual(monitor["spec"]["endpoints"][0]["port"], "http")
        self.assertEqual(monitor["spec"]["endpoints"][0]["path"], "/metrics")
        for svc in by_kind(objects, "Service"):
            self.assertLessEqual(monitor["spec"]["selector"]["matchLabels"].items(), svc["metadata"]["labels"].items())
        # The plain manifests' optional ServiceMonitor is this one, without the labels set here.
        plain_monitor = normalize(load_yaml(PLAIN / "servicemonitor.yaml"))
        rendered_monitor = normalize(by_kind(render_chart.render({"metrics": {"serviceMonitor": {"enabled": True}}}),
                                             "ServiceMonitor")[0])
        self.assertEqual(rendered_monitor, plain_monitor)
        job = by_kind(objects, "Job")[0]
        self.assertEqual(job["spec"]["template"]["spec"]["serviceAccountName"], "keygate-migrator")
        self.assertEqual(
            job["spec"]["template"]["metadata"]["annotations"],
            {"example.com/team": "access", "sidecar.istio.io/inject": "false"},
        )
        policy = next(o for o in by_kind(objects, "NetworkPolicy") if o["metadata"]["name"] == "keygate")
        self.assertEqual(policy["spec"]["egress"][-1], {"ports": [{"port": 443, "protocol": "TCP"}]})
        self.assertIn("from", policy["spec"]["ingress"][0])
        # Prometheus may reach the HTTP port only, from its own peers.
        metrics_rule = policy["spec"]["ingress"][1]
        self.assertEqual(metrics_rule["ports"], [{"port": HTTP_PORT, "protocol": "TCP"}])
        self.assertEqual(
            metrics_rule["from"],
            render_chart.SCENARIOS["allinone-everything-on"]["networkPolicy"]["ingress"]["metricsFrom"],
        )

    def test_single_replica_without_redis(self):
        objects = render_chart.render(render_chart.SCENARIOS["single-replica-no-redis"])
        deployment = by_kind(objects, "Deployment")[0]
        env = env_of(container(deployment))
        self.assertNotIn("KEYGATE_REDIS_URL", env)
        self.assertNotIn("KEYGATE_ADMIN_TOKEN", env)
        self.assertNotIn("KEYGATE_CACHE_KEY", env, "no Redis, no cache key")
        self.assertIn("KEYGATE_INSTANT_KEY_SECRET", env)
        self.assertIn("KEYGATE_PAGE_TOKEN_KEY", env)
        self.assertFalse(SENDER_SECRET_ENV & set(env), "an empty secretName leaves the variable out")
        self.assertEqual(deployment["spec"]["replicas"], 1)
        self.assertEqual(deployment["spec"]["template"]["spec"]["serviceAccountName"], "default")
        kinds = {o["kind"] for o in objects}
        self.assertFalse(kinds & {"NetworkPolicy", "Job", "ServiceAccount", "HorizontalPodAutoscaler"})

    def test_lint_is_clean(self):
        self.assertEqual(render_chart.lint(), [])


@unittest.skipUnless(HAVE_HELM, "Helm engine (helm-python-sdk) not installed")
class ChartGuards(unittest.TestCase):
    """Value combinations the chart must refuse, with a message that says why."""

    def assertRefused(self, vals, message):
        with self.assertRaises(Exception) as caught:
            render_chart.render(vals)
        self.assertIn(message, str(caught.exception))

    def test_unknown_mode(self):
        self.assertRefused({"mode": "splitted"}, 'mode must be "allInOne" or "split"')

    def test_database_is_required(self):
        self.assertRefused({"secrets": {"databaseUrl": {"secretName": ""}}}, "secrets.databaseUrl.secretName is required")
        self.assertRefused(
            {"secrets": {"instantKeySecret": {"secretName": ""}}}, "secrets.instantKeySecret.secretName is required"
        )
        self.assertRefused({"secrets": {"pageTokenKey": {"secretName": ""}}}, "secrets.pageTokenKey.secretName is required")

    def test_grace_must_cover_prestop_and_drain(self):
        self.assertRefused({"terminationGracePeriodSeconds": 25}, "must exceed preStopSleepSeconds")
        self.assertRefused({"config": {"KEYGATE_DRAIN_SECS": "40"}}, "must exceed preStopSleepSeconds")
        render_chart.render({"config": {"KEYGATE_DRAIN_SECS": "40"}, "terminationGracePeriodSeconds": 60})

    def test_redis_is_required_beyond_one_replica(self):
        no_redis = {"secrets": {"redisUrl": {"secretName": ""}}}
        self.assertRefused(no_redis, "secrets.redisUrl is required")
        self.assertRefused({**no_redis, "mode": "split"}, "secrets.redisUrl is required")
        self.assertRefused(
            {**no_redis, "allInOne": {"autoscaling": {"enabled": False}, "replicas": 2}}, "secrets.redisUrl is required"
        )

    def test_chart_owned_settings_cannot_be_overridden_in_config(self):
        self.assertRefused({"config": {"KEYGATE_ROLES": "gateway"}}, "config.KEYGATE_ROLES cannot be set")
        self.assertRefused({"config": {"KEYGATE_DATABASE_URL": "postgres://x"}}, "config.KEYGATE_DATABASE_URL cannot be set")
        self.assertRefused({"config": {"KEYGATE_SMTP_URL": "smtps://u:p@h"}}, "config.KEYGATE_SMTP_URL cannot be set")
        self.assertRefused({"config": {"KEYGATE_SMS_AUTH_TOKEN": "t"}}, "config.KEYGATE_SMS_AUTH_TOKEN cannot be set")

    def test_prometheus_must_be_let_in_when_ingress_is_narrowed(self):
        narrowed = {
            "metrics": {"serviceMonitor": {"enabled": True}},
            "networkPolicy": {"ingress": {"from": [{"podSelector": {"matchLabels": {"app": "ingress"}}}]}},
        }
        self.assertRefused(narrowed, "set networkPolicy.ingress.metricsFrom")
        # Not narrowed: every source may already reach the HTTP port.
        render_chart.render({"metrics": {"serviceMonitor": {"enabled": True}}})


if __name__ == "__main__":
    if not HAVE_HELM:
        print("chart_defaults_test: Helm engine not available; rendered-chart tests are skipped", file=sys.stderr)
    unittest.main()
