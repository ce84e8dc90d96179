"""charts/hymirec with the real helm CLI: lint, render with default and production-like values, and assert on
the manifests (probes, resources, security contexts, image tags, ports vs. the app's config, guard rails)."""
from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import pytest

# The helper is loaded by path (conftest registers it under this name), whatever pytest's import mode.
helm_runner = sys.modules.get("hymirec_helm_runner")
if helm_runner is None:  # pragma: no cover - conftest always runs first under pytest
    _spec = importlib.util.spec_from_file_location("hymirec_helm_runner", Path(__file__).with_name("helm_runner.py"))
    helm_runner = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = helm_runner
    _spec.loader.exec_module(helm_runner)

NAME = "hymirec"  # release "hymirec" + chart "hymirec" -> fullname "hymirec"
SERVING, STREAM, TRITON = f"{NAME}-serving", f"{NAME}-stream", f"{NAME}-triton"
SERVING_PORT = 8080  # the adapter's HTTP port (API, /live, /ready, /metrics)
TRITON_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}


@pytest.fixture(params=["default", "production"])
def render(request):
    return request.getfixturevalue(f"{request.param}_render")


@pytest.fixture(params=["default", "production"])
def render_and_values(request):
    return request.getfixturevalue(f"{request.param}_render"), request.getfixturevalue(f"{request.param}_values")


def containers(workload, init=True):
    spec = workload["spec"]["template"]["spec"]
    return list(spec.get("containers", [])) + (list(spec.get("initContainers", [])) if init else [])


def container(render, deployment, name):
    return next(c for c in containers(render.get("Deployment", deployment)) if c["name"] == name)


def env_of(c):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def named_port(c, name):
    return next(p["containerPort"] for p in c["ports"] if p["name"] == name)


# ------------------------------------------------------------------------------------------ the tool and lint

def test_helm_is_the_real_cli(helm):
    assert re.fullmatch(r"v3\.\d+\.\d+", helm.version())


@pytest.mark.parametrize("values", [[], [helm_runner.PRODUCTION_VALUES]], ids=["default", "production"])
def test_lint_strict_passes(helm, values):
    out = helm.lint(values).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out


def test_expected_objects(default_render, production_render):
    for render in (default_render, production_render):
        names = render.names()
        for kind, name in [("Deployment", SERVING), ("Service", SERVING), ("HorizontalPodAutoscaler", SERVING),
                           ("PodDisruptionBudget", SERVING), ("Deployment", STREAM), ("Deployment", TRITON),
                           ("Service", TRITON), ("ConfigMap", f"{NAME}-feast"), ("ServiceAccount", NAME)]:
            assert (kind, name) in names
    assert ("PersistentVolumeClaim", f"{NAME}-artifacts") in default_render.names()
    assert not production_render.of_kind("PersistentVolumeClaim")  # existingClaim in production
    assert not default_render.of_kind("ServiceMonitor")


# ------------------------------------------------------------------------------------------ resources, security

def test_every_container_has_requests_and_limits(render):
    for workload in render.workloads():
        for c in containers(workload):
            res = c.get("resources") or {}
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(section, {})), (workload["metadata"]["name"], c["name"])


def test_security_contexts_are_non_root_and_locked_down(render):
    for workload in render.workloads():
        pod = workload["spec"]["template"]["spec"]
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True
        assert psc["runAsUser"] != 0
        assert psc["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for c in containers(workload):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["privileged"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "add" not in sc["capabilities"]
            assert sc["seccompProfile"]["type"] == "RuntimeDefault"
            # a read-only root needs a writable /tmp
            if c["name"] != "model-repository":
                assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])


def test_image_tags_are_pinned(render):
    for workload in render.workloads():
        for c in containers(workload):
            image = c["image"]
            ref = image.split("@")[0]
            repo, _, tag = ref.rpartition(":")
            assert repo and "/" not in tag, image
            assert tag and tag.lower() != "latest", image


def test_production_uses_digest(production_render):
    assert "@sha256:" in container(production_render, SERVING, "serving")["image"]
    assert container(production_render, SERVING, "serving")["image"] == container(production_render, STREAM, "stream")["image"]


@pytest.mark.parametrize("setting", ["image.tag=latest", "image.tag=LATEST", "image.tag=", "triton.image.tag=latest",
                                     "triton.image.tag="])
def test_latest_or_empty_tag_fails_the_render(helm, setting):
    err = helm.template_error(set_values=[setting])
    assert "tag must" in err


def test_latest_tag_of_model_repository_image_fails(helm):
    err = helm.template_error(set_values=["triton.modelRepository.source=initContainer",
                                          "triton.modelRepository.initContainer.image.tag=latest"])
    assert "triton.modelRepository.initContainer.image.tag must not be 'latest'" in err


# ------------------------------------------------------------------------------------------ serving

def test_serving_ports_and_probes_match_the_app(render):
    c = container(render, SERVING, "serving")
    assert named_port(c, "http") == SERVING_PORT
    env = env_of(c)  # serving.config reads HYMIREC_HOST / HYMIREC_PORT (its defaults are 127.0.0.1 / 8080)
    assert env["HYMIREC_HOST"] == "0.0.0.0" and env["HYMIREC_PORT"] == str(SERVING_PORT)
    assert c["livenessProbe"]["httpGet"] == {"path": "/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["startupProbe"]["httpGet"]["port"] == "http"
    service = render.get("Service", SERVING)
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http" and port["port"] == SERVING_PORT


def test_serving_env_points_at_triton_milvus_feast_and_artifacts(render_and_values):
    render, values = render_and_values
    c = container(render, SERVING, "serving")
    env = env_of(c)
    # HYMIREC_TRITON_URL = grpc host:port of this release's Triton service
    host, port = env["HYMIREC_TRITON_URL"].rsplit(":", 1)
    assert host == TRITON
    triton_service_ports = {p["name"]: p for p in render.get("Service", TRITON)["spec"]["ports"]}
    assert int(port) == triton_service_ports["grpc"]["port"] == TRITON_PORTS["grpc"]
    assert env["HYMIREC_MILVUS_URI"] == values.get("externalMilvus", {}).get("uri", "http://milvus:19530")
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in render.get("Deployment", SERVING)["spec"]["template"]["spec"]["volumes"]}
    # HYMIREC_FEAST_REPO: the store config file (features.store.StoreConfig.from_file) in the Feast ConfigMap
    store_dir, store_file = env["HYMIREC_FEAST_REPO"].rsplit("/", 1)
    assert volumes[mounts[store_dir]["name"]]["configMap"]["name"] == f"{NAME}-feast"
    data = render.get("ConfigMap", f"{NAME}-feast")["data"]
    assert {"feature_store.yaml", store_file} <= set(data)
    # HYMIREC_ARTIFACT_DIR: the production run directory inside the read-only artifacts mount
    artifacts_root = values.get("artifacts", {}).get("mountPath", "/var/lib/hymirec/artifacts")
    assert env["HYMIREC_ARTIFACT_DIR"] == f"{artifacts_root}/current"
    assert mounts[artifacts_root]["readOnly"] is True


def test_hpa_owns_serving_replicas(helm, render):
    hpa = render.get("HorizontalPodAutoscaler", SERVING)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": SERVING}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in render.get("Deployment", SERVING)["spec"]
    fixed = helm.template(set_values=["serving.autoscaling.enabled=false", "serving.replicaCount=3"])
    assert fixed.get("Deployment", SERVING)["spec"]["replicas"] == 3
    assert not fixed.of_kind("HorizontalPodAutoscaler")


def test_services_select_their_pods(render):
    for name in (SERVING, TRITON):
        selector = render.get("Service", name)["spec"]["selector"]
        pod_labels = render.get("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
        assert render.get("Deployment", name)["spec"]["selector"]["matchLabels"] == selector


# ------------------------------------------------------------------------------------------ stream processor

def test_stream_env_and_probes(render_and_values):
    render, values = render_and_values
    c = container(render, STREAM, "stream")
    env = env_of(c)
    kafka = values.get("externalKafka", {})
    assert env["HYMIREC_KAFKA_BOOTSTRAP"] == kafka.get("bootstrapServers", "kafka:9092")
    assert env["HYMIREC_KAFKA_TOPIC"] == "interactions"
    assert env["HYMIREC_KAFKA_DLQ_TOPIC"] == "interactions.dlq"
    assert env["HYMIREC_TOPIC"] == env["HYMIREC_KAFKA_TOPIC"]  # the name features.stream reads
    serving_env = env_of(container(render, SERVING, "serving"))
    assert env["HYMIREC_FEAST_REPO"] == serving_env["HYMIREC_FEAST_REPO"]
    assert env["HYMIREC_ARTIFACT_DIR"] == serving_env["HYMIREC_ARTIFACT_DIR"]
    # every $(VAR) in the args is defined in the env, so Kubernetes expands it
    args = c["args"]
    for var in re.findall(r"\$\((\w+)\)", " ".join(args)):
        assert var in env, var
    flag = lambda name: args[args.index(name) + 1]  # noqa: E731
    assert flag("--topic") == "$(HYMIREC_KAFKA_TOPIC)" and flag("--dlq-topic") == "$(HYMIREC_KAFKA_DLQ_TOPIC)"
    assert flag("--bootstrap") == "$(HYMIREC_KAFKA_BOOTSTRAP)" and flag("--store-config") == "$(HYMIREC_FEAST_REPO)"
    metrics = named_port(c, "metrics")
    assert flag("--metrics-port") == "$(HYMIREC_STREAM_METRICS_PORT)"
    assert metrics == int(env["HYMIREC_STREAM_METRICS_PORT"])
    # liveness asks the consume loop (/live), not just the HTTP thread (/metrics answers while the loop is wedged)
    for probe, path in (("startupProbe", "/ready"), ("livenessProbe", "/live"), ("readinessProbe", "/ready")):
        assert f"'http://127.0.0.1:{metrics}{path}'" in " ".join(c[probe]["exec"]["command"]), probe
    assert float(flag("--liveness-stall-s")) == values.get("stream", {}).get("livenessStallSeconds", 120)


def test_stream_replicas_within_partitions(render_and_values):
    render, values = render_and_values
    deployment = render.get("Deployment", STREAM)
    partitions = int(deployment["metadata"]["annotations"]["hymirec.io/topic-partitions"])
    assert partitions == values.get("externalKafka", {}).get("topicPartitions", 6)
    assert 1 <= deployment["spec"]["replicas"] <= partitions
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_more_stream_replicas_than_partitions_fails(helm):
    err = helm.template_error(set_values=["stream.replicaCount=7", "externalKafka.topicPartitions=6"])
    assert "stream.replicaCount (7) must be <= externalKafka.topicPartitions (6)" in err
    err = helm.template_error([helm_runner.PRODUCTION_VALUES], ["stream.replicaCount=13"])
    assert "must be <= externalKafka.topicPartitions (12)" in err
    ok = helm.template(set_values=["stream.replicaCount=6", "externalKafka.topicPartitions=6"])
    assert ok.get("Deployment", STREAM)["spec"]["replicas"] == 6


# ------------------------------------------------------------------------------------------ triton

def test_triton_ports_probes_and_model_load_budget(render_and_values):
    render, values = render_and_values
    c = container(render, TRITON, "triton")
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == TRITON_PORTS
    args = c["args"]
    for name, port in TRITON_PORTS.items():
        assert f"--{name}-port={port}" in args
    if values.get("triton", {}).get("replicaCount", 1) > 1:  # replicas follow the pinned config by polling
        assert "--model-control-mode=poll" in args and "--load-model=*" not in args
    else:
        assert "--model-control-mode=explicit" in args and "--load-model=*" in args
    service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in render.get("Service", TRITON)["spec"]["ports"]}
    assert service_ports == {name: (port, name) for name, port in TRITON_PORTS.items()}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    startup = c["startupProbe"]
    assert startup["httpGet"]["path"] == "/v2/health/live"
    budget = values.get("triton", {}).get("modelLoadTimeoutSeconds", 600)
    assert startup["failureThreshold"] * startup["periodSeconds"] >= budget
    assert startup["failureThreshold"] == math.ceil(budget / startup["periodSeconds"])
    # liveness alone would kill a pod that is still loading models
    live = c["livenessProbe"]
    assert live["failureThreshold"] * live["periodSeconds"] < budget


def test_triton_model_repository_from_volume(render):
    deployment = render.get("Deployment", TRITON)
    c = container(render, TRITON, "triton")
    repo_flag = next(a for a in c["args"] if a.startswith("--model-repository="))
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == repo_flag.split("=", 1)[1])
    # one target's repository (CPU "local" by default): <artifact root>/triton/<target> holds llm/config.pbtxt
    assert mount["readOnly"] is True and mount["subPath"] in ("triton/local", "triton/production")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["readOnly"] is True


def test_triton_model_repository_from_init_container(helm):
    render = helm.template(set_values=["triton.modelRepository.source=initContainer",
                                       "triton.modelRepository.initContainer.image.tag=2026.11.1"])
    pod = render.get("Deployment", TRITON)["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"] == "hymirec/hymirec-models:2026.11.1"
    assert init["command"] == ["cp", "-R", "/models/.", "/model-repository/"]
    volume = next(v for v in pod["volumes"] if v["name"] == "model-repository")
    assert "emptyDir" in volume and "persistentVolumeClaim" not in volume
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model-repository")
    assert "subPath" not in mount


def test_triton_gpu_in_production(production_render, default_render):
    limits = container(production_render, TRITON, "triton")["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in container(default_render, TRITON, "triton")["resources"]["limits"]


# ------------------------------------------------------------------------------------------ feast config

def test_store_config_matches_feast_config(render):
    import yaml

    data = render.get("ConfigMap", f"{NAME}-feast")["data"]
    feast_config = yaml.safe_load(data["feature_store.yaml"])
    store = yaml.safe_load(data["store.yaml"])
    assert store["type"] == feast_config["online_store"]["type"] == "redis"
    assert store["redis_url"] == feast_config["online_store"]["connection_string"]
    assert store["project"] == feast_config["project"]
    assert store["registry_path"].startswith("/tmp/")  # each pod applies into a writable local registry
    if importlib.util.find_spec("features.store.config") is not None:
        from features.store.config import StoreConfig

        assert StoreConfig.from_mapping(store).type == "redis"


def test_feast_config_loads_in_feast(render, monkeypatch, tmp_path):
    import yaml
    from feast.repo_config import load_repo_config

    text = render.get("ConfigMap", f"{NAME}-feast")["data"]["feature_store.yaml"]
    raw = yaml.safe_load(text)
    assert raw["online_store"]["type"] == "redis"
    assert raw["project"] == "hymirec"
    (tmp_path / "feature_store.yaml").write_text(text)
    monkeypatch.setenv("HYMIREC_REDIS_PASSWORD", "pw-from-secret")
    monkeypatch.setenv("HYMIREC_FEAST_REGISTRY_DSN", "postgresql+psycopg://feast@db:5432/feast")
    config = load_repo_config(tmp_path, tmp_path / "feature_store.yaml")
    assert type(config.online_store).__name__ == "RedisOnlineStoreConfig"
    assert config.entity_key_serialization_version == 3


def test_production_redis_uses_tls_and_a_secret(production_render):
    text = production_render.get("ConfigMap", f"{NAME}-feast")["data"]["feature_store.yaml"]
    conn = __import__("yaml").safe_load(text)["online_store"]["connection_string"]
    # ssl=true with verification spelled out, so Feast tooling verifies exactly as serving and stream do.
    assert conn == ("redis-master.redis.svc.cluster.local:6379,ssl=true,ssl_cert_reqs=required,"
                    "ssl_check_hostname=true,password=${HYMIREC_REDIS_PASSWORD},"
                    "socket_timeout=2,socket_connect_timeout=2")
    for name, cname in ((SERVING, "serving"), (STREAM, "stream")):
        ref = env_of(container(production_render, name, cname))["HYMIREC_REDIS_PASSWORD"]
        assert ref == {"secretKeyRef": {"name": "hymirec-redis", "key": "redis-password"}}


def test_feast_config_change_rolls_the_pods(helm, default_render):
    changed = helm.template(set_values=["externalRedis.host=redis-other"])
    for name in (SERVING, STREAM):
        before = default_render.get("Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        after = changed.get("Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        assert before["checksum/feast-config"] != after["checksum/feast-config"]


# ------------------------------------------------------------------------------------------ monitoring, notes

def test_service_monitors_scrape_real_ports(production_render):
    monitors = {m["metadata"]["name"]: m for m in production_render.of_kind("ServiceMonitor")}
    assert set(monitors) == {SERVING, TRITON}
    for name, monitor in monitors.items():
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        service = production_render.get("Service", name)
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["path"] == "/metrics"


def test_notes_render(helm):
    notes = helm.notes()
    assert f"svc/{SERVING} 8080:8080" in notes
    assert f"{TRITON}:8001" in notes
    prod = helm.notes([helm_runner.PRODUCTION_VALUES])
    assert "6 consumer(s)" in prod and "12 partitions" in prod


def test_components_can_be_disabled(helm):
    render = helm.template(set_values=["triton.enabled=false", "serving.tritonUrl=triton.shared:8001",
                                       "stream.enabled=false"])
    assert ("Deployment", TRITON) not in render.names() and ("Deployment", STREAM) not in render.names()
    assert env_of(container(render, SERVING, "serving"))["HYMIREC_TRITON_URL"] == "triton.shared:8001"
    err = helm.template_error(set_values=["triton.enabled=false"])
    assert "serving.tritonUrl must be set" in err


# ------------------------------------------------------------------------------------------ docs/deploying.md

def test_documented_airflow_values_agree_with_the_chart(default_values):
    import yaml

    text = (helm_runner.ROOT / "docs" / "deploying.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.S)]
    (airflow,) = [b for b in blocks if isinstance(b, dict) and "dags" in b]
    sub_path = airflow["dags"]["gitSync"]["subPath"]
    assert (helm_runner.ROOT / sub_path / "hymirec_retrain.py").exists()
    assert (helm_runner.ROOT / sub_path / "hymirec_codebook_refresh.py").exists()
    env = {e["name"]: e["value"] for e in airflow["env"]}
    assert env["HYMIREC_ARTIFACT_DIR"] == default_values["artifacts"]["mountPath"]
    assert env["HYMIREC_FEAST_REPO"] == default_values["feast"]["mountPath"] + "/store.yaml"
    assert env["HYMIREC_TRITON_URL"].endswith(f":{TRITON_PORTS['grpc']}")
    mounts = {m["mountPath"] for m in airflow["workers"]["extraVolumeMounts"]}
    assert {env["HYMIREC_ARTIFACT_DIR"], default_values["feast"]["mountPath"]} <= mounts


def test_several_triton_replicas_follow_releases_by_polling(helm):
    """A promote's repository-API call reaches one Triton pod; several replicas must poll the pinned config."""
    err = helm.template_error(set_values=["triton.replicaCount=2"])
    assert "triton.replicaCount > 1 needs triton.modelControlMode=poll" in err
    err = helm.template_error(set_values=["triton.replicaCount=2", "triton.modelControlMode=poll",
                                          "triton.modelRepository.source=initContainer",
                                          "triton.modelRepository.initContainer.image.tag=0.1.0"])
    assert "poll needs triton.modelRepository.source=pvc" in err
    render = helm.template(set_values=["triton.replicaCount=2", "triton.modelControlMode=poll",
                                       "triton.repositoryPollSeconds=3"])
    triton = render.get("Deployment", "hymirec-triton")
    args = triton["spec"]["template"]["spec"]["containers"][0]["args"]
    assert triton["spec"]["replicas"] == 2
    assert "--model-control-mode=poll" in args and "--repository-poll-secs=3" in args
    assert "--load-model=*" not in args
