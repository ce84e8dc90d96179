"""The container images, built for real with Buildah (devservices/images.py) and smoke-tested inside:

* images/app.Dockerfile on the local debootstrap Debian bookworm base, Python packages from requirements/app.lock
  (offline wheelhouse): runs as uid/gid 10001; `hymirec --help`; exactly the locked packages; the serving app
  answers /live and /ready (200, Triton and Milvus reported degraded) from a small run directory mounted read-only;
  the ONNX export the Airflow pipeline runs works (torch without OpenAI Triton); the DAG folder parses.
* images/models.Dockerfile with a generated Triton repository: the chart's initContainer command, as rendered by the
  real helm, copies it byte-identically into an empty volume as the pod's uid and as 10001.

Skipped (with the free and needed GB in the message) when the disk at .cache/images cannot hold a build (measured
peak: ~15 GB above the base and the wheelhouse, ~18 GB from nothing; NEED_GB in devservices/images.py). Measured on 2
cores: ~5 min cold (base, wheelhouse, image), ~3.5 min once the base and the wheelhouse exist. The built images are
removed at the end; the base (0.2 GB) and the wheelhouse (2.8 GB) stay.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devservices import images  # noqa: E402
from devservices._proc import free_port  # noqa: E402

# the first test carries the builds (~4-5 min here, more with vfs storage or a slow mirror)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

APP = "localhost/hymirec-test/hymirec:test"
MODELS_REPO, MODELS_TAG = "localhost/hymirec-test/hymirec-models", "test"
MODELS = f"{MODELS_REPO}:{MODELS_TAG}"
RUN_MOUNT = "/var/lib/hymirec/artifacts/current"  # where the chart mounts the production run directory
UID = "10001"


@pytest.fixture(scope="module")
def buildah():
    if not (shutil.which("buildah") and shutil.which("debootstrap")):
        subprocess.run(["bash", str(ROOT / "tools" / "setup.d" / "70-images.sh")], check=True)
    b = images.Buildah()
    with b.locked():
        b.cleanup()
        b.rmi(APP, MODELS)
        free, need = images.free_gb(), b.needed_gb()
        if free < need:
            pytest.skip(f"image builds need ~{need:.1f} GB free at {images.CACHE} ({b.driver} storage), "
                        f"only {free:.1f} GB free")
        try:
            b.base()
            yield b
        finally:
            b.rmi(APP, MODELS)  # ~5.8 GB; the base (~0.2 GB) and the wheelhouse stay for the next run


@pytest.fixture(scope="module")
def app_image(buildah):
    start = time.monotonic()
    buildah.build_app(APP, base=images.BASE_IMAGE)
    print(f"\n[images] app image built in {time.monotonic() - start:.0f} s: {buildah.size_gb(APP):.2f} GB, "
          f"{images.du_gb(images.CACHE):.1f} GB under .cache/images")
    return APP


@pytest.fixture(scope="module")
def app(buildah, app_image):
    with buildah.container(app_image, "hymirec-test-app") as ctr:
        yield ctr


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from devservices.serving_run import make_serving_run

    root = tmp_path_factory.mktemp("image-run") / "run"
    return make_serving_run(root)


def test_app_image_config(buildah, app_image):
    config = buildah.inspect(app_image)["OCIv1"]["config"]
    assert config["User"] == f"{UID}:{UID}"  # numeric: runAsNonRoot can check it
    assert config["Cmd"] == ["hymirec", "serve"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PATH"].startswith("/opt/hymirec/venv/bin:")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/hymirec/dags"
    assert "WHEELS" not in env  # a build argument only
    if buildah.driver == "overlay":  # (vfs storage builds one layer, see Buildah.build)
        # split by size (CUDA libraries, torch, the rest, this repository): no layer near the whole install
        sizes = [layer["size"] / 1e9 for layer in json.loads(buildah.inspect(app_image)["Manifest"])["layers"]]
        assert max(sizes) < 3.5, sizes


def test_cli_runs_as_10001(buildah, app):
    out = buildah.run(app, ["sh", "-c", "id -u; id -g; hymirec --help; touch /opt/hymirec/venv/x 2>&1 || true; "
                                        "find / -xdev \\( -path /proc -o -path /usr/share/python-wheels \\) -prune -o "
                                        "-name '*.whl' -printf 'WHEEL %p\\n' 2>/dev/null; true"]).stdout
    lines = out.splitlines()
    assert lines[:2] == [UID, UID], out
    assert "usage: hymirec" in out and "serve" in out and "stream" in out
    assert "Permission denied" in out  # the install is root's: the service user cannot change it
    assert "WHEEL " not in out  # the wheelhouse was mounted for the build only


def test_installed_packages_are_the_lock(buildah, app):
    listed = json.loads(buildah.run(app, ["pip", "list", "--format=json", "--disable-pip-version-check"]).stdout)
    have = {images._norm(p["name"]): p["version"] for p in listed}
    locked = {}
    for line in images.LOCK_FILE.read_text().splitlines():
        if line and line[0].isalnum() and "==" in line:
            name, version = line.split(" ")[0].split("==")
            locked[name] = version
    assert have.pop("hymirec") == images._version()
    have.pop("pip", None)  # the venv's own
    assert have == locked
    assert not images.LOCK_EXCLUDE & set(have)


def test_serving_live_and_ready_from_a_read_only_run(buildah, app, run_dir):
    port, milvus_port = free_port(), free_port()  # nothing listens on milvus_port: Milvus is unreachable
    env = {"HYMIREC_ARTIFACT_DIR": RUN_MOUNT, "HYMIREC_HOST": "127.0.0.1", "HYMIREC_TRITON_URL": "off",
           "HYMIREC_MILVUS_URI": f"http://127.0.0.1:{milvus_port}", "HYMIREC_STORE_TYPE": "sqlite",
           "HYMIREC_SQLITE_PATH": "/tmp/feast/online.db", "HYMIREC_FEAST_REGISTRY": "/tmp/feast/registry.db"}
    proc = buildah.run(app, ["python", "-c", PROBE, str(port)], env=env, timeout=300,
                       volumes=(f"{run_dir['layout'].root}:{RUN_MOUNT}:ro",))
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    log = result["log_tail"]
    assert result["uid"] == int(UID)
    assert result.get("/live", {}).get("status") == 200, log
    ready = result.get("/ready", {})
    assert ready.get("status") == 200, log
    assert ready["body"]["ready"] is True
    assert ready["body"]["checks"]["artifacts"] is True and ready["body"]["checks"]["store"] is True
    assert {"triton", "milvus"} <= set(ready["body"]["degraded"]), ready


# Runs inside the container: `hymirec serve` in the background, /live then /ready polled on loopback, the result
# (and the server's log tail) printed as one JSON line.
PROBE = r"""
import json, os, subprocess, sys, time, urllib.request
port = sys.argv[1]
server = subprocess.Popen(["hymirec", "serve", "--port", port], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
out, start = {}, time.monotonic()
for path in ("/live", "/ready"):
    while time.monotonic() - start < 180 and server.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                out[path] = {"status": r.status, "body": json.loads(r.read()),
                             "after_s": round(time.monotonic() - start, 1)}
                break
        except Exception:
            time.sleep(0.5)
server.terminate()
try:
    log = server.communicate(timeout=30)[0]
except subprocess.TimeoutExpired:
    server.kill()
    log = server.communicate()[0]
out["log_tail"], out["uid"] = log[-3000:], os.getuid()
print(json.dumps(out))
"""


def test_onnx_export_runs_in_the_image(buildah, app, run_dir, tmp_path):
    """What the pipeline's export task runs (torch.onnx dynamo export + onnxruntime parity check): torch works
    without OpenAI's Triton, which the lock leaves out."""
    work = tmp_path / "run"
    shutil.copytree(run_dir["layout"].root, work, ignore=shutil.ignore_patterns("export"))
    os.chmod(tmp_path, 0o777)
    for p in [work, *work.rglob("*")]:
        os.chmod(p, 0o777 if p.is_dir() else 0o666)
    proc = buildah.run(app, ["hymirec", "export", "onnx", "--run-dir", "/tmp/run", "--cases", "20"],
                       volumes=(f"{work}:/tmp/run",), timeout=600)
    manifest = json.loads((work / "export" / "manifest.json").read_text())
    assert (work / "export" / "llm.onnx").stat().st_uid == int(UID), proc.stdout[-2000:]
    assert "llm.onnx" in json.dumps(manifest)
    out = buildah.run(app, ["python", "-c", "import importlib.util as u; print(u.find_spec('triton') is None)"])
    assert out.stdout.strip() == "True"


def test_dags_parse_in_the_image(buildah, app):
    code = ("import os; from airflow.dag_processing.dagbag import DagBag; "
            "b = DagBag(dag_folder=os.environ['AIRFLOW__CORE__DAGS_FOLDER']); "
            "print('RESULT', sorted(b.dag_ids), sorted(b.import_errors))")
    out = buildah.run(app, ["python", "-c", code], env={"AIRFLOW_HOME": "/tmp/airflow"}).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    assert line == "RESULT ['hymirec_codebook_refresh', 'hymirec_retrain'] []", out[-2000:]


# --------------------------------------------------------------------------------------------- the models image
@pytest.fixture(scope="module")
def model_repo(run_dir, tmp_path_factory):
    """A Triton repository as the pipeline writes it (training/export/triton_repo.py), two versions."""
    from training.export.triton_repo import add_version, llm_spec

    d = run_dir["manifest"]["dims"]
    spec = llm_spec(d["n_coarse"], d["d_llm"], d["d_item"], d["n_interests"], d["d_out"])
    repo = tmp_path_factory.mktemp("models") / "repo"
    for _ in range(2):
        add_version(repo, run_dir["layout"].llm_onnx, spec, target="local")
    os.chmod(repo / "llm" / "config.pbtxt", 0o600)  # a tight umask on the pipeline side must not matter
    return repo


@pytest.fixture(scope="module")
def models_image(buildah, model_repo, app_image):  # after the app image: one build's disk at a time
    buildah.build_models(model_repo, MODELS, base=images.BASE_IMAGE)
    return MODELS


@pytest.fixture(scope="module")
def init_container():
    runner = sys.modules.get("hymirec_helm_runner")  # tests/charts/conftest.py loads it under this name
    if runner is None:
        spec = importlib.util.spec_from_file_location("hymirec_helm_runner", ROOT / "tests/charts/helm_runner.py")
        runner = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = runner  # before exec: its dataclasses look their module up
        spec.loader.exec_module(runner)
    rendered = runner.Helm().template(set_values=[
        "triton.modelRepository.source=initContainer",
        f"triton.modelRepository.initContainer.image.repository={MODELS_REPO}",
        f"triton.modelRepository.initContainer.image.tag={MODELS_TAG}"])
    pod = rendered.get("Deployment", "hymirec-triton")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    uid = init.get("securityContext", {}).get("runAsUser", pod["securityContext"]["runAsUser"])
    gid = init.get("securityContext", {}).get("runAsGroup", pod["securityContext"].get("runAsGroup", uid))
    return init, f"{uid}:{gid}"


def test_models_image_config(buildah, models_image):
    config = buildah.inspect(models_image)["OCIv1"]["config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["WorkingDir"] == "/models"


@pytest.mark.parametrize("who", ["rendered pod user", "uid 10001"])
def test_init_container_copies_the_repository(buildah, models_image, model_repo, init_container, who, tmp_path):
    init, rendered_user = init_container
    assert init["image"] == models_image
    user = rendered_user if who == "rendered pod user" else f"{UID}:{UID}"
    (mount,) = [m["mountPath"] for m in init["volumeMounts"] if m["name"] == "model-repository"]
    empty_dir = tmp_path / "emptydir"
    empty_dir.mkdir()
    os.chmod(empty_dir, 0o777)  # what the kubelet gives an emptyDir
    with buildah.container(models_image, "hymirec-test-models") as ctr:
        buildah.run(ctr, init["command"], user=user, volumes=(f"{empty_dir}:{mount}",))
    assert _tree(empty_dir) == _tree(model_repo)
    owners = {p.stat().st_uid for p in empty_dir.rglob("*")}
    assert owners == {int(user.split(":")[0])}, owners


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out
