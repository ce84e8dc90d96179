"""The chart and the code agree: every path, port and HYMIREC_* variable a rendered container is given is checked
against what the code reads or writes (issue 27, deliverable 2).

* Triton's model repository is the directory the pipeline writes for the chosen target
  (orchestration/artifact_root.py + training/export/triton_repo.py), and the target follows triton.gpus:
  CPU ("local") unless triton.gpus > 0 (GPU, "production").
* Serving's env, parsed by serving.config.ServingConfig.from_env, gives the chart's ports, artifact run directory,
  Feast store config (parsed by features.store.StoreConfig.from_file), Triton URL, Milvus URI and token.
* The stream processor's args, $(VAR)-expanded like the kubelet does, parse with features.stream_cli's parser
  and name the artifact root whose registry the promote task flips (core/releases.py).
* Every HYMIREC_* variable set on a container is read by the code, or consumed by Kubernetes ($(VAR) in the
  container's args) or by the store config's ${VAR} expansion.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

helm_runner = sys.modules["hymirec_helm_runner"]  # registered by conftest.py
ROOT = helm_runner.ROOT
NAME = "hymirec"
SERVING, STREAM, TRITON = f"{NAME}-serving", f"{NAME}-stream", f"{NAME}-triton"
CODE_DIRS = ("core", "serving", "features", "orchestration", "hymirec", "dags", "training")
# Everything optional switched on, so every variable the chart can set is rendered.
ALL_OPTIONS = ["externalMilvus.existingSecret=milvus-auth", "externalRedis.existingSecret=redis-auth",
               "externalKafka.security.protocol=SASL_SSL", "externalKafka.security.existingSecret=kafka-auth",
               "externalKafka.security.caSecret=kafka-ca", "externalRedis.ssl=true",
               "externalRedis.caSecret=redis-ca"]


def pod(render, deployment):
    return render.get("Deployment", deployment)["spec"]["template"]["spec"]


def container(render, deployment, name):
    return next(c for c in pod(render, deployment)["containers"] if c["name"] == name)


def env_of(c, secret="from-a-secret"):
    """The container's environment as the process sees it (Secret references replaced by a stand-in value)."""
    return {e["name"]: e.get("value", secret) for e in c.get("env", [])}


def expand(arg: str, env: dict) -> str:
    """Kubernetes' $(VAR) expansion of command/args."""
    return re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg)


def merged(base: dict, override: dict) -> dict:
    """helm's values merge: maps merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def mounted_file(render, deployment, c, path: str, tmp_path: Path) -> Path:
    """Write the ConfigMap key a container sees at `path` to tmp_path (same file name) and return it."""
    directory, name = path.rsplit("/", 1)
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == directory)
    volume = next(v for v in pod(render, deployment)["volumes"] if v["name"] == mount["name"])
    data = render.get("ConfigMap", volume["configMap"]["name"])["data"]
    assert name in data, f"{path}: no key {name!r} in ConfigMap {volume['configMap']['name']}"
    out = tmp_path / name
    out.write_text(data[name])
    return out


def tiny_onnx(path: Path) -> Path:
    """A stand-in graph (Identity): add_version only copies it, Triton is not started here."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "stand_in", [x], [y])
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.fixture(scope="module")
def code_text() -> str:
    return "\n".join(p.read_text(errors="replace") for d in CODE_DIRS for p in (ROOT / d).rglob("*.py"))


# ------------------------------------------------------------------------------------------ Triton repository

@pytest.mark.parametrize("gpus, target", [(0, "local"), (1, "production"), (2, "production")])
def test_triton_mounts_the_repository_the_pipeline_writes(helm, tmp_path, gpus, target):
    from orchestration.artifact_root import ArtifactRoot
    from training.export.triton_repo import add_version, llm_spec

    render = helm.template(set_values=[f"triton.gpus={gpus}"])
    triton = container(render, TRITON, "triton")
    assert render.get("Deployment", TRITON)["metadata"]["annotations"]["hymirec.io/triton-target"] == target
    repo_root = next(a for a in triton["args"] if a.startswith("--model-repository=")).split("=", 1)[1]
    mount = next(m for m in triton["volumeMounts"] if m["mountPath"] == repo_root)
    # The same claim serving mounts as the artifact root (what the pipeline writes into).
    triton_claim = next(v for v in pod(render, TRITON)["volumes"] if v["name"] == mount["name"])
    serving_claim = next(v for v in pod(render, SERVING)["volumes"] if v["name"] == "artifacts")
    assert triton_claim["persistentVolumeClaim"]["claimName"] == serving_claim["persistentVolumeClaim"]["claimName"]

    # Write the repository exactly as the retrain DAG's export_model does, then look through the mount.
    artifacts = ArtifactRoot(tmp_path / "artifacts")
    onnx = tiny_onnx(tmp_path / "llm.onnx")
    add_version(artifacts.triton_repo / target, onnx, llm_spec(4, 8, 8, 2, 8), target=target, version=1)
    seen_by_triton = artifacts.root / mount["subPath"]
    config = seen_by_triton / "llm" / "config.pbtxt"
    assert config.is_file(), f"Triton would find no model: {mount['subPath']} holds {sorted(seen_by_triton.iterdir())}"
    assert (seen_by_triton / "llm" / "1" / "model.onnx").is_file()
    # The instance kind the generated config declares matches the pod's resources.
    kind = "KIND_GPU" if gpus else "KIND_CPU"
    assert kind in config.read_text()
    limits = triton["resources"]["limits"]
    assert (int(limits["nvidia.com/gpu"]) == gpus) if gpus else ("nvidia.com/gpu" not in limits)


def test_the_default_target_is_cpu(helm, default_values, production_values):
    assert default_values["triton"]["gpus"] == 0 and not default_values["triton"]["modelRepository"]["target"]
    annotation = lambda r: r.get("Deployment", TRITON)["metadata"]["annotations"]["hymirec.io/triton-target"]  # noqa: E731
    assert annotation(helm.template()) == "local"
    assert production_values["triton"]["gpus"] > 0
    assert annotation(helm.template([helm_runner.PRODUCTION_VALUES])) == "production"
    # An explicit target wins: CPU instances on a GPU pod are allowed (e.g. while drivers are being sorted out).
    assert annotation(helm.template(set_values=["triton.gpus=1", "triton.modelRepository.target=local"])) == "local"


def test_targets_the_code_does_not_write_fail_the_render(helm):
    from training.export.triton_repo import TARGETS

    assert TARGETS == ("local", "production")  # the chart's two choices
    err = helm.template_error(set_values=["triton.modelRepository.target=production"])
    assert "set triton.gpus > 0" in err
    err = helm.template_error(set_values=["triton.modelRepository.target=gpu"])
    assert 'must be local, production or empty, not "gpu"' in err


# ------------------------------------------------------------------------------------------ serving

@pytest.mark.parametrize("values", [[], [helm_runner.PRODUCTION_VALUES]], ids=["default", "production"])
def test_serving_env_parses_into_the_chart_settings(helm, tmp_path, values):
    from features.store import StoreConfig
    from orchestration.artifact_root import ArtifactRoot
    from serving.config import ServingConfig

    render = helm.template(values, ALL_OPTIONS)
    chart_values = yaml.safe_load((helm_runner.CHART / "values.yaml").read_text())
    for f in values:
        chart_values = merged(chart_values, yaml.safe_load(Path(f).read_text()))
    c = container(render, SERVING, "serving")
    env = env_of(c)
    config = ServingConfig.from_env(env)
    # ports: the adapter listens where the container port, probes and Service point
    assert config.host == "0.0.0.0"
    assert config.port == next(p["containerPort"] for p in c["ports"] if p["name"] == "http")
    # artifacts: the run directory the promote task swaps (ArtifactRoot.current), inside the read-only mount
    mount_root = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "artifacts")
    assert config.artifact_dir == ArtifactRoot(mount_root).current
    assert config.release_root == ArtifactRoot(mount_root).root  # registry.json: the release serving follows
    # Feast: the file HYMIREC_FEAST_REPO names is mounted and parses as the store config the code reads
    store = StoreConfig.from_file(mounted_file(render, SERVING, c, config.feast_repo, tmp_path))
    assert store.type == chart_values["feast"]["onlineStore"]["type"]
    # Triton: this release's Service, on its gRPC port
    host, port = config.triton_url.rsplit(":", 1)
    ports = {p["name"]: p["port"] for p in render.get("Service", host)["spec"]["ports"]}
    triton_ports = {p["name"]: p["containerPort"] for p in container(render, TRITON, "triton")["ports"]}
    assert int(port) == ports["grpc"] == triton_ports["grpc"]
    # Milvus: URI and the token from the Secret reach the client's arguments
    assert config.milvus == chart_values["externalMilvus"]["uri"]
    assert config.milvus_token == "from-a-secret"
    token = next(e for e in c["env"] if e["name"] == "HYMIREC_MILVUS_TOKEN")["valueFrom"]["secretKeyRef"]
    assert token == {"name": "milvus-auth", "key": chart_values["externalMilvus"]["existingSecretTokenKey"]}
    # API keys: a mounted Secret directory
    assert any(m["mountPath"] == config.api_keys_file for m in c["volumeMounts"])


def test_no_milvus_token_without_a_secret(default_render):
    from serving.config import ServingConfig

    env = env_of(container(default_render, SERVING, "serving"))
    assert "HYMIREC_MILVUS_TOKEN" not in env
    assert ServingConfig.from_env(env).milvus_token == ""


# ------------------------------------------------------------------------------------------ stream processor

def test_stream_args_parse_and_name_the_run_layout(helm, tmp_path):
    from core.releases import REGISTRY_FILE
    from features.store import StoreConfig
    from features.stream_cli import build_parser
    from orchestration.artifact_root import ArtifactRoot

    render = helm.template(set_values=ALL_OPTIONS)
    c = container(render, STREAM, "stream")
    env = env_of(c)
    assert c["command"][:3] == ["hymirec", "stream", "run"]
    args = build_parser().parse_args(["run", *(expand(a, env) for a in c["args"])])
    # the registry the promote task flips (core.releases): item codes and codebook come from its current release
    mount_root = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "artifacts")
    assert Path(args.release_root) == ArtifactRoot(mount_root).root
    assert ArtifactRoot(args.release_root).registry == Path(mount_root) / REGISTRY_FILE
    assert args.item_codes is None and args.codebook is None
    assert args.metrics_port == next(p["containerPort"] for p in c["ports"] if p["name"] == "metrics")
    assert args.topic == env["HYMIREC_TOPIC"] and args.bootstrap == env["HYMIREC_KAFKA_BOOTSTRAP"]
    StoreConfig.from_file(mounted_file(render, STREAM, c, args.store_config, tmp_path))
    # the Kafka CA file the code reads is where the Secret is mounted
    ca_dir, _ = env["HYMIREC_KAFKA_SSL_CAFILE"].rsplit("/", 1)
    assert any(m["mountPath"] == ca_dir for m in c["volumeMounts"])


# ------------------------------------------------------------------------------------------ every variable

@pytest.mark.parametrize("values", [[], [helm_runner.PRODUCTION_VALUES]], ids=["default", "production"])
def test_every_hymirec_variable_is_read(helm, code_text, values):
    render = helm.template(values, ALL_OPTIONS + ["triton.modelRepository.source=initContainer",
                                                  "triton.modelRepository.initContainer.image.tag=0.1.0",
                                                  "triton.modelControlMode=none"])  # an image's fixed models
    feast_text = "\n".join(render.get("ConfigMap", f"{NAME}-feast")["data"].values())
    unread = []
    for workload in render.workloads():
        spec = workload["spec"]["template"]["spec"]
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            argv = " ".join(c.get("command", []) + c.get("args", []))
            for name in (e["name"] for e in c.get("env", []) if e["name"].startswith("HYMIREC_")):
                if re.search(rf"\b{name}\b", code_text) or f"$({name})" in argv or f"${{{name}}}" in feast_text:
                    continue
                unread.append(f"{workload['metadata']['name']}/{c['name']}: {name}")
    assert not unread, f"set by the chart, read by nothing: {unread}"
