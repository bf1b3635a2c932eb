"""The Helm chart, rendered by the real helm (3.17) and validated offline against the
Kubernetes schemas of the oldest version the chart claims (Chart.yaml kubeVersion)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import CHART, ROOT

PRODUCTION = ROOT / "examples" / "values-production.yaml"
# Every ${ENV} the production values' config references, as the Secret would provide them.
PRODUCTION_ENV = {
    "OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test", "TEAM_A_KEY": "team-a-key-0123456789",
    "SLUICE_MASTER_KEY": "master-key-0123456789", "SLUICE_OPS_TOKEN": "ops-token-0123456789",
    "REDIS_URL": "redis://:pw@redis:6379/0", "CLICKHOUSE_URL": "http://sluice:pw@clickhouse:8123/sluice",
}
HOOK_KINDS = {"Job", "ConfigMap", "Secret"}


def render(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(helm), "template", "rel", str(CHART), "--namespace", "llm", *args],
                          capture_output=True, text=True, check=check, timeout=60)


def objects(helm: Path, *args: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(render(helm, *args).stdout) if d]


def find(objs: list[dict], kind: str, name: str | None = None) -> dict:
    matches = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"{kind} {name}: {[o['metadata']['name'] for o in matches]}"
    return matches[0]


def pod_specs(objs: list[dict]) -> dict[str, dict]:
    return {f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["spec"]
            for o in objs if o["kind"] in ("Deployment", "Job")}


def kube_version() -> str:
    claim = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    m = re.match(r">=\s*(\d+\.\d+)\.\d+", claim)
    assert m, claim
    return f"{m[1]}.0"


@pytest.fixture(scope="module")
def default(helm) -> list[dict]:
    return objects(helm)


@pytest.fixture(scope="module")
def production(helm) -> list[dict]:
    return objects(helm, "-f", str(PRODUCTION))


def test_helm_lint_strict(helm):
    for values in ([], ["-f", str(PRODUCTION)]):
        result = subprocess.run([str(helm), "lint", "--strict", str(CHART), *values],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


EVERYTHING_ELSE = ["--set", "trial.redis.enabled=true", "--set", "trial.clickhouse.enabled=true",
                   "--set", "secrets.env.OPENAI_API_KEY=sk-x", "--set", "networkPolicy.enabled=true"]


@pytest.mark.parametrize("values", [[], ["-f", str(PRODUCTION)], EVERYTHING_ELSE],
                         ids=["default", "production", "trial-and-chart-secret"])
def test_rendered_manifests_validate_against_the_kubernetes_schemas(helm, kubernetes_validate, values, tmp_path):
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(render(helm, *values).stdout)
    result = subprocess.run([kubernetes_validate, "-k", kube_version(), "--strict", str(manifest)],
                            capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    # Only the Prometheus operator's kinds (CRDs) have no schema in Kubernetes' own.
    unknown = set(re.findall(r"Couldn't find schema for kind (\w+)", out))
    assert unknown <= {"ServiceMonitor", "PrometheusRule"}, out
    assert "passed for resource deployment/rel-sluice" in out


def test_production_release_has_every_part(production):
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in production)
    print("\nrendered for examples/values-production.yaml:\n  " + "\n  ".join(f"{k} {n}" for k, n in kinds))
    for kind in ("Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                 "ServiceAccount", "Ingress", "NetworkPolicy", "ServiceMonitor", "Job"):
        assert any(k == kind for k, _ in kinds), kind
    assert not any(k == "Secret" for k, _ in kinds)            # existingSecret: the chart makes none
    assert ("Deployment", "rel-sluice-monitor") in kinds
    hpa = find(production, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)
    assert "replicas" not in find(production, "Deployment", "rel-sluice")["spec"]    # the HPA owns it
    assert find(production, "PodDisruptionBudget")["spec"]["minAvailable"] == 2


def test_the_monitor_reaches_the_gateway_through_its_service(production):
    (monitor,) = pod_specs(production)["Deployment/rel-sluice-monitor"]["containers"]
    env = {e["name"]: e.get("value") for e in monitor["env"]}
    service = find(production, "Service", "rel-sluice")
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
    assert env["SLUICE_GATEWAY_URL"] == f"http://rel-sluice:{port}"
    # and the NetworkPolicy that limits who may call the gateway lets it in
    policy = find(production, "NetworkPolicy")
    (http_rule,) = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "http"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "sluice", "app.kubernetes.io/instance": "rel",
                                            "app.kubernetes.io/component": "monitor"}}} in http_rule["from"]


def test_default_release_is_lean(default):
    kinds = {o["kind"] for o in default}
    assert kinds == {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "ServiceAccount", "Job"}
    assert find(default, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_gateway_probes_drain_and_spread(production):
    spec = pod_specs(production)["Deployment/rel-sluice"]
    (gw,) = spec["containers"]
    assert gw["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    assert gw["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert gw["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert gw["resources"]["requests"]["cpu"] == "2"
    # Grace period above preStop + the drain deadline the config carries.
    config = yaml.safe_load(find(production, "ConfigMap", "rel-sluice")["data"]["sluice.yaml"])
    prestop = gw["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] > prestop + config["server"]["shutdown_timeout_s"]
    assert config["server"]["shutdown_timeout_s"] == 60 and config["server"]["ops_port"] == 9090
    keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for c in spec["topologySpreadConstraints"]:
        assert c["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"


def test_every_container_is_non_root_read_only_and_unprivileged(production, helm):
    trial = objects(helm, "-f", str(PRODUCTION), "--set", "trial.redis.enabled=true")
    specs = pod_specs(production)
    assert set(specs) == {"Deployment/rel-sluice", "Deployment/rel-sluice-monitor", "Job/rel-sluice-migrate"}
    for name, spec in specs.items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert {"/tmp", "/var/lib/sluice", "/etc/sluice"} <= mounts, name
    # The trial Redis is marked as such: it is not one of Sluice's hardened containers.
    redis = find(trial, "Deployment", "rel-sluice-redis")
    assert redis["metadata"]["annotations"]["sluice.dev/not-for-production"] == "true"


def test_secrets_are_environment_never_config(helm):
    objs = objects(helm, "--set", "secrets.env.OPENAI_API_KEY=sk-live-do-not-leak",
                   "--set", "secrets.env.CLICKHOUSE_URL=http://u:hunter2@ch:8123/sluice")
    for cm in (o for o in objs if o["kind"] == "ConfigMap"):
        text = yaml.safe_dump(cm)
        assert "sk-live-do-not-leak" not in text and "hunter2" not in text
        assert "${OPENAI_API_KEY}" in cm["data"]["sluice.yaml"]
    secret = find(objs, "Secret", "rel-sluice-env")
    assert "sk-live-do-not-leak" not in yaml.safe_dump(secret)       # base64 in data, as Kubernetes wants
    gw = pod_specs(objs)["Deployment/rel-sluice"]["containers"][0]
    assert gw["envFrom"] == [{"secretRef": {"name": "rel-sluice-env"}}]
    # The migration hook runs before the release's Secret exists: it gets its own copy, as a hook.
    job = pod_specs(objs)["Job/rel-sluice-migrate"]["containers"][0]
    assert job["envFrom"] == [{"secretRef": {"name": "rel-sluice-migrate"}}]
    assert find(objs, "Secret", "rel-sluice-migrate")["metadata"]["annotations"]["helm.sh/hook-weight"] == "-10"


def test_existing_secret_feeds_every_container(production):
    for name, spec in pod_specs(production).items():
        assert spec["containers"][0]["envFrom"] == [{"secretRef": {"name": "sluice-env"}}], name


def test_config_or_secret_change_rolls_the_pods(helm):
    def checksums(*args: str) -> dict:
        return find(objects(helm, *args), "Deployment", "rel-sluice")["spec"]["template"]["metadata"]["annotations"]
    base = checksums()
    assert checksums("--set", "config.telemetry.ttl_days=7")["checksum/config"] != base["checksum/config"]
    assert checksums("--set", "secrets.env.A=b")["checksum/secret"] != base["checksum/secret"]


def test_migration_hook_runs_first_and_the_gateway_waits_for_it(production):
    hooks = [o for o in production if "helm.sh/hook" in o["metadata"].get("annotations", {})]
    assert {o["kind"] for o in hooks} == {"Job", "ConfigMap"}
    for o in hooks:
        annotations = o["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    weights = {o["kind"]: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for o in hooks}
    assert weights["ConfigMap"] < weights["Job"]
    job = find(production, "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][0] == "migrate"
    assert job["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == "rel-sluice-migrate"
    for cm in (find(production, "ConfigMap", "rel-sluice"), find(production, "ConfigMap", "rel-sluice-migrate")):
        assert yaml.safe_load(cm["data"]["sluice.yaml"])["telemetry"]["migrate_on_start"] is False


def test_without_the_migration_job_the_gateway_migrates_itself(helm):
    objs = objects(helm, "--set", "migrations.enabled=false")
    assert not any(o["kind"] == "Job" for o in objs)
    config = yaml.safe_load(find(objs, "ConfigMap", "rel-sluice")["data"]["sluice.yaml"])
    assert "migrate_on_start" not in config["telemetry"]


def test_service_monitor_scrapes_the_ops_port_with_the_token(production):
    sm = find(production, "ServiceMonitor")
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "ops" and endpoint["path"] == "/metrics"
    assert endpoint["authorization"]["credentials"] == {"name": "sluice-env", "key": "SLUICE_OPS_TOKEN"}
    service = find(production, "Service", "rel-sluice")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": 80, "ops": 9090}
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_prometheus_rule_and_dashboards_carry_every_shipped_file(helm, production):
    alerts = CHART / "files" / "alerts" / "prometheus-rules.yaml"
    dashboards = sorted((CHART / "files" / "dashboards").glob("*.json"))
    rules = [o for o in production if o["kind"] == "PrometheusRule"]
    if alerts.exists():
        (rule,) = rules
        assert rule["spec"]["groups"] == yaml.safe_load(alerts.read_text())["groups"]
        assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    else:
        assert rules == []                          # enabled, but nothing to ship yet
    maps = [o for o in production if o["kind"] == "ConfigMap" and o["metadata"].get("labels", {}).get("grafana_dashboard")]
    shipped = {}
    for cm in maps:
        assert cm["metadata"]["namespace"] == "monitoring"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        shipped.update(cm["data"])
    assert sorted(shipped) == [p.name for p in dashboards]
    for path in dashboards:
        assert json.loads(shipped[path.name]) == json.loads(path.read_text())


def test_prometheus_rule_and_dashboards_render_from_the_chart_files(helm, tmp_path):
    """With files present (the dashboards issue writes them), both objects appear."""
    import shutil
    chart = tmp_path / "sluice"
    shutil.copytree(CHART, chart)
    (chart / "files" / "alerts").mkdir(parents=True, exist_ok=True)
    (chart / "files" / "alerts" / "prometheus-rules.yaml").write_text(
        "groups:\n- name: sluice\n  rules:\n  - alert: SluiceDown\n    expr: up{job=\"sluice\"} == 0\n    for: 5m\n")
    (chart / "files" / "dashboards").mkdir(parents=True, exist_ok=True)
    (chart / "files" / "dashboards" / "sluice_overview.json").write_text('{"title": "Sluice", "panels": []}')
    out = subprocess.run([str(helm), "template", "rel", str(chart), "--set", "prometheusRule.enabled=true",
                          "--set", "dashboards.enabled=true"], capture_output=True, text=True, check=True).stdout
    objs = [d for d in yaml.safe_load_all(out) if d]
    rule = find(objs, "PrometheusRule")
    assert rule["spec"]["groups"][0]["rules"][0]["alert"] == "SluiceDown"
    cm = find(objs, "ConfigMap", "rel-sluice-dashboard-sluice-overview")
    assert json.loads(cm["data"]["sluice_overview.json"])["title"] == "Sluice"


@pytest.mark.parametrize("values", [[], ["-f", str(PRODUCTION)]], ids=["default", "production"])
def test_the_configmap_is_a_config_sluice_accepts(helm, values, tmp_path):
    objs = objects(helm, *values)
    (tmp_path / "sluice.yaml").write_text(find(objs, "ConfigMap", "rel-sluice")["data"]["sluice.yaml"])
    env = {**os.environ, **PRODUCTION_ENV, "SLUICE_DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", "--config", str(tmp_path / "sluice.yaml")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")


def test_server_settings_the_chart_derives_from_come_from_its_values(helm):
    result = render(helm, "--set", "config.server.ops_port=9100", check=False)
    assert result.returncode != 0
    assert "config.server.ops_port: set server.opsPort instead" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--set", "securityContext.readOnlyRootFilesystem=false"], "securityContext.readOnlyRootFilesystem"),
    (["--set", "podSecurityContext.runAsNonRoot=false"], "podSecurityContext.runAsNonRoot"),
    (["--set", "replicaCount=-1"], "replicaCount: Must be greater than or equal to 0"),
    (["--set", "image.pullPolicy=Sometimes"], "image.pullPolicy"),
    (["--set", "server.opsPort=70000"], "server.opsPort"),
    (["--set", "autoscaling.enabled=yes"], "autoscaling.enabled: Invalid type. Expected: boolean"),
    (["--set", "secrets.env.bad-name=x"], "secrets.env"),
    (["--set", "unknownKey=1"], "Additional property unknownKey is not allowed"),
    (["--set", "serviceMonitor.interval=often"], "serviceMonitor.interval"),
])
def test_bad_values_fail_with_the_key_named(helm, args, message):
    result = render(helm, *args, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr
