"""The deployment manifests render and validate offline, and agree with the server they deploy.

- Kubernetes (``deploy/k8s``): every overlay renders (``tests/deploy/kustomize.py``; compared with
  ``kubectl kustomize`` where kubectl exists) and every built-in resource validates against the
  Kubernetes JSON schemas that ``kubernetes-validate`` ships (strict: no unknown fields).
- Custom resources (ServiceMonitor, KEDA ScaledObject, KServe ClusterServingRuntime and
  InferenceService): their fields are checked against the fields of their CRDs (written out below
  from the projects' API types), and their containers validate as Kubernetes containers.
- Compose (``deploy/compose.yaml``) parses strictly against the Compose specification
  (``compose-spec``), HAProxy's config passes ``haproxy -c`` where haproxy is installed, and every
  metric a dashboard panel or an autoscaling rule queries exists in a real server's /metrics.
- Settings named anywhere (``TABSERVE_*``) are real settings; the grace periods cover the drain.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from server.serve import SHUTDOWN_MARGIN_S
from server.settings import Settings
from tests.deploy.kustomize import load_documents, render
from tests.support.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = sorted(p for p in (DEPLOY / "k8s" / "overlays").iterdir() if p.is_dir())
K8S_VERSIONS = ["1.30", "1.37"]
CUSTOM_KINDS = {"ServiceMonitor", "ScaledObject", "ClusterServingRuntime", "InferenceService"}
PROMETHEUS_OWN = {"up"}


def rendered(overlay: Path) -> list[dict[str, Any]]:
    return render(overlay)


def deployment(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return next(
        r for r in resources if r["kind"] == "Deployment" and r["metadata"]["name"] == "tabserve"
    )


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


# --- Kubernetes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_resource_of_every_overlay_validates_against_the_kubernetes_schemas(
    overlay: Path, version: str
) -> None:
    resources = rendered(overlay)
    kinds = {r["kind"] for r in resources}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert {"ServiceMonitor", "PersistentVolumeClaim"} <= kinds
    for resource in resources:
        if resource["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(resource, version, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_the_tiny_renderer_agrees_with_kubectl_kustomize(overlay: Path) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60
    )
    if out.returncode != 0:
        pytest.skip(f"kubectl kustomize cannot run here: {out.stderr.strip()[:200]}")
    theirs = [d for d in yaml.safe_load_all(out.stdout) if d]

    def key(r: dict[str, Any]) -> tuple[str, str]:
        return r["kind"], r["metadata"]["name"]

    assert sorted(map(key, rendered(overlay))) == sorted(map(key, theirs))
    ours = {key(r): r for r in rendered(overlay)}
    for resource in theirs:
        assert ours[key(resource)] == resource, key(resource)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_the_deployment_probes_drain_and_settings_agree_with_the_server(overlay: Path) -> None:
    resources = rendered(overlay)
    pod = deployment(resources)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = env_of(container)
    # Every TABSERVE_* variable is a real setting.
    fields = {f"TABSERVE_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    # Probes: startup and liveness on /health/live, readiness on /health/ready, the named port.
    assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    port = container["ports"][0]
    assert port["name"] == "http" and str(port["containerPort"]) == env["TABSERVE_PORT"]
    # SIGTERM comes after preStop; the drain and uvicorn's margin must fit in what is left.
    sleep = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = float(env["TABSERVE_DRAIN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] >= sleep + drain + SHUTDOWN_MARGIN_S + 1
    # The admin token comes from a Secret, never from a literal.
    assert "TABSERVE_ADMIN_TOKEN" not in env
    token_path = container["args"][container["args"].index("--admin-token-file") + 1]
    secret_volume = next(v for v in pod["volumes"] if "secret" in v)
    mount = next(m for m in container["volumeMounts"] if m["name"] == secret_volume["name"])
    assert token_path.startswith(mount["mountPath"] + "/")
    models = next(m for m in container["volumeMounts"] if m["name"] == "models")
    assert models["mountPath"] == env["TABSERVE_MODELS_DIR"] and models["readOnly"]
    # Redis is deployed beside it, under the name the URL uses.
    redis_host = env["TABSERVE_REDIS_URL"].split("//")[1].split(":")[0]
    assert ("Service", redis_host) in {(r["kind"], r["metadata"]["name"]) for r in resources}
    # The PDB and the HPA select and scale this Deployment.
    hpa = next(r for r in resources if r["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "tabserve"
    assert any(m["type"] == "Resource" for m in hpa["spec"]["metrics"])  # the CPU fallback
    pdb = next(r for r in resources if r["kind"] == "PodDisruptionBudget")
    assert (
        pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"] or hpa["spec"]["minReplicas"] == 1
    )


def test_the_hpa_scales_on_the_metrics_the_adapter_rules_serve() -> None:
    rules = yaml.safe_load(
        (DEPLOY / "k8s" / "autoscaling" / "prometheus-adapter-rules.yaml").read_text()
    )
    served = {rule["name"]["as"] for rule in rules["rules"]["custom"]}
    hpa = next(r for r in render(DEPLOY / "k8s" / "base") if r["kind"] == "HorizontalPodAutoscaler")
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    assert wanted and wanted <= served


# --- custom resources, checked against their CRDs' fields ----------------------------------------

# serving.kserve.io/v1alpha1 ServingRuntimeSpec (pkg/apis/serving/v1alpha1/servingruntime_types.go)
SERVING_RUNTIME_SPEC = {
    "supportedModelFormats", "multiModel", "disabled", "protocolVersions", "workerSpec",
    "containers", "volumes", "nodeSelector", "affinity", "tolerations", "labels", "annotations",
    "imagePullSecrets", "hostIPC", "grpcEndpoint", "grpcDataEndpoint", "httpDataEndpoint",
    "replicas", "storageHelper", "builtInAdapter",
}  # fmt: skip
SUPPORTED_MODEL_FORMAT = {"name", "version", "autoSelect", "priority"}
PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}
# serving.kserve.io/v1beta1 PredictorSpec, ComponentExtensionSpec and ModelSpec
# (pkg/apis/serving/v1beta1/predictor.go, component.go, predictor_model.go)
COMPONENT_EXTENSION = {
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency", "timeout",
    "canaryTrafficPercent", "logger", "batcher", "labels", "annotations", "deploymentStrategy",
}  # fmt: skip
PREDICTOR_IMPLEMENTATIONS = {
    "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface", "pmml",
    "lightgbm", "paddle", "model",
}  # fmt: skip
MODEL_SPEC_OWN = {
    "modelFormat",
    "runtime",
    "storageUri",
    "runtimeVersion",
    "protocolVersion",
    "storage",
}
# monitoring.coreos.com/v1 ServiceMonitor (the fields we use, from the CRD's spec.endpoints items)
SERVICE_MONITOR_SPEC = {
    "selector",
    "endpoints",
    "namespaceSelector",
    "jobLabel",
    "podTargetLabels",
    "targetLabels",
    "sampleLimit",
}
SERVICE_MONITOR_ENDPOINT = {
    "port",
    "targetPort",
    "path",
    "scheme",
    "interval",
    "scrapeTimeout",
    "params",
    "honorLabels",
    "relabelings",
    "metricRelabelings",
    "bearerTokenSecret",
    "authorization",
    "tlsConfig",
}
# keda.sh/v1alpha1 ScaledObject
SCALED_OBJECT_SPEC = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "advanced",
    "triggers",
    "fallback",
}
KEDA_TRIGGER = {"type", "metadata", "name", "metricType", "authenticationRef", "useCachedMetrics"}


def validate_containers(containers: list[dict[str, Any]], version: str = "1.37") -> None:
    """Containers of a custom resource, validated as the containers of a Pod."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "x"},
        "spec": {"containers": containers},
    }
    kubernetes_validate.validate(pod, version, strict=True)


def test_the_kserve_cluster_serving_runtime_has_only_crd_fields_and_speaks_v2() -> None:
    (runtime,) = load_documents(DEPLOY / "kserve" / "cluster-serving-runtime.yaml")
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert runtime["kind"] == "ClusterServingRuntime"
    spec = runtime["spec"]
    assert set(spec) <= SERVING_RUNTIME_SPEC, set(spec) - SERVING_RUNTIME_SPEC
    for fmt in spec["supportedModelFormats"]:
        assert set(fmt) <= SUPPORTED_MODEL_FORMAT and "name" in fmt
    assert set(spec["protocolVersions"]) <= PROTOCOLS and "v2" in spec["protocolVersions"]
    validate_containers(spec["containers"])
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"
    args = container["args"]
    assert args[args.index("--models-dir") + 1] == "/mnt/models"
    port = args[args.index("--port") + 1]
    assert str(container["ports"][0]["containerPort"]) == port
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    fields = {f"TABSERVE_{name.upper()}" for name in Settings.model_fields}
    assert set(env_of(container)) <= fields


def test_the_inference_service_example_uses_the_runtime_with_crd_fields_only() -> None:
    (runtime,) = load_documents(DEPLOY / "kserve" / "cluster-serving-runtime.yaml")
    (isvc,) = load_documents(DEPLOY / "kserve" / "inference-service.yaml")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    assert set(isvc["spec"]) <= {"predictor", "explainer", "transformer"}
    predictor = isvc["spec"]["predictor"]
    implementations = set(predictor) & PREDICTOR_IMPLEMENTATIONS
    assert implementations == {"model"}  # exactly one
    assert set(predictor) - implementations <= COMPONENT_EXTENSION
    model = predictor["model"]
    # ModelSpec: its own fields plus an inline corev1.Container.
    container = {k: v for k, v in model.items() if k not in MODEL_SPEC_OWN}
    validate_containers([{"name": "kserve-container", **container}])
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert model["modelFormat"]["name"] in {
        f["name"] for f in runtime["spec"]["supportedModelFormats"]
    }
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", isvc["metadata"]["name"])


def test_the_service_monitor_and_keda_scaled_object_have_only_crd_fields() -> None:
    monitor = next(r for r in render(DEPLOY / "k8s" / "base") if r["kind"] == "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) <= SERVICE_MONITOR_SPEC
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= SERVICE_MONITOR_ENDPOINT
        assert endpoint["path"] == "/metrics" and endpoint["port"] == "http"
    (scaled,) = load_documents(DEPLOY / "k8s" / "autoscaling" / "keda-scaledobject.yaml")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert set(scaled["spec"]) <= SCALED_OBJECT_SPEC
    for trigger in scaled["spec"]["triggers"]:
        assert set(trigger) <= KEDA_TRIGGER


# --- compose ------------------------------------------------------------------------------------


def test_compose_has_two_replicas_behind_haproxy_on_ready_prometheus_and_grafana() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"tabserve", "redis", "lb", "prometheus", "grafana"} <= set(services)
    tabserve = services["tabserve"]
    assert tabserve["deploy"]["replicas"] == 2
    assert (DEPLOY / tabserve["build"]["dockerfile"].removeprefix("deploy/")).is_file()
    env = tabserve["environment"]
    fields = {f"TABSERVE_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields
    assert env["TABSERVE_REDIS_URL"].startswith("redis://redis:")
    grace = int(tabserve["stop_grace_period"].rstrip("s"))
    assert grace >= float(env["TABSERVE_DRAIN_TIMEOUT_S"]) + SHUTDOWN_MARGIN_S
    for mounted in [
        *services["lb"]["volumes"],
        *services["prometheus"]["volumes"],
        *services["grafana"]["volumes"],
    ]:
        source = mounted.split(":")[0]
        assert (DEPLOY / source).exists(), source
    haproxy = (DEPLOY / "compose" / "haproxy.cfg").read_text()
    assert "option httpchk GET /health/ready" in haproxy
    assert re.search(r"server-template \w+ \d+ tabserve:8000 .*resolvers", haproxy)
    prometheus = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["dns_sd_configs"][0]["names"] == ["tabserve"]  # every replica, one by one


def test_compose_file_parses_strictly_against_the_compose_specification() -> None:
    compose_spec = pytest.importorskip(
        "compose_spec", reason="compose-spec (a dev extra on x86_64 Linux) is not installed"
    )
    text = (DEPLOY / "compose.yaml").read_text()
    parsed = compose_spec.PyCompose.from_yaml(text)  # ValueError on any unknown or bad field
    assert sorted(parsed.service_names()) == ["grafana", "lb", "prometheus", "redis", "tabserve"]
    with pytest.raises(ValueError, match="stop_grace_periods"):
        compose_spec.PyCompose.from_yaml(text.replace("stop_grace_period:", "stop_grace_periods:"))


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_the_compose_haproxy_config_is_valid() -> None:
    done = subprocess.run(
        ["haproxy", "-c", "-f", str(DEPLOY / "compose" / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- metric names against a real server ---------------------------------------------------------


@pytest.fixture(scope="module")
def served_metrics(
    model_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[set[str]]:
    """Every sample and family name in a real server's /metrics after a few predictions."""
    with np.load(model_repo / "xgb_small" / "1" / "holdout.npz") as data:
        rows = data["X"][:4].astype(np.float32)
    log = tmp_path_factory.mktemp("metrics") / "serve.log"
    # xgb_small is given a cache TTL, so the cache's series have samples too.
    env = {"TABSERVE_CACHE_MODEL_TTL_S": '{"xgb_small": 60}'}
    with ServerProcess(model_repo, env=env, log_path=log) as server:
        for _ in range(2):
            httpx.post(
                server.url + "/v1/models/xgb_small/predict",
                json={"instances": rows.tolist()},
                timeout=10,
            ).raise_for_status()
        text = httpx.get(server.url + "/metrics", timeout=10).text
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        # A labelled metric with no sample yet still has its family (HELP and TYPE lines).
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        names |= {family.name + suffix for suffix in ["", *suffixes.get(family.type, [])]}
        names |= {s.name for s in family.samples}
    yield names


def queried_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\b(tabserve_[a-z0-9_]+|up)\b", expr))


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(
        (DEPLOY / "compose" / "grafana" / "dashboards" / "tabserve.json").read_text()
    )
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_the_dashboard_has_the_panels_asked_for() -> None:
    dashboard = json.loads(
        (DEPLOY / "compose" / "grafana" / "dashboards" / "tabserve.json").read_text()
    )
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    wanted_panels = (
        "request rate", "latency", "queue depth", "queue wait", "batch size",
        "cache hit ratio by tier", "503", "504", "drift status", "psi", "live quality",
    )  # fmt: skip
    for wanted in wanted_panels:
        assert wanted in titles, wanted
    provider = yaml.safe_load(
        (
            DEPLOY / "compose" / "grafana" / "provisioning" / "dashboards" / "tabserve.yaml"
        ).read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_every_metric_the_dashboard_and_autoscaling_query_is_served(
    served_metrics: set[str],
) -> None:
    rules = (DEPLOY / "k8s" / "autoscaling" / "prometheus-adapter-rules.yaml").read_text()
    keda = (DEPLOY / "k8s" / "autoscaling" / "keda-scaledobject.yaml").read_text()
    exprs = [*dashboard_exprs(), rules, keda]
    queried = set().union(*(queried_metrics(e) for e in exprs)) - PROMETHEUS_OWN
    # names the adapter rules define rather than query
    queried -= {"tabserve_queue_wait_seconds_mean"}
    assert queried, "no metric found in the queries"
    missing = sorted(queried - served_metrics)
    assert not missing, f"queried but not in /metrics: {missing}"
