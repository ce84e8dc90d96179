"""Run the real `tritonserver` binary (bundled in the nvidia-pytriton wheel) and manage model versions.

The server runs from `.venv-triton` (numpy<2; see tools/setup.d/30-triton.sh and ../shared/notes/stack.md):
  * LD_LIBRARY_PATH = <the interpreter's own lib dir>:<site-packages>/nvidia_pytriton.libs
  * PATH starts with .venv-triton/bin, so the Python backend stub runs models under numpy 1.26 + onnxruntime
  * loopback only, free ports, --model-control-mode=explicit, metrics off.
  * with a control key (HYMIREC_TRITON_CONTROL_KEY) the model-repository API is restricted to it
    (serving/triton_access.py); every control call here sends it, inference needs none.

Rollout (`rollout(repo, model, new_version)`) loads version N+1 *next to* N (one reload with
`version_policy: specific [N, N+1]`), waits until N+1 is READY, then reloads with `[N+1]` only, which unloads N.
Triton keeps serving the already-loaded versions during a reload, so clients never see the model unavailable.
The served version and its history are recorded in `<repo>/<model>/served.json` (config.pbtxt stays as
generated); `rollback(repo, model)` rolls out the previous version the same way.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from serving.triton_access import TritonError, control_key_from_env, grpc_headers, refused, restricted_flags

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SERVED_FILE = "served.json"


@dataclass(frozen=True)
class TritonInstall:
    tritonserver: Path
    backend_dir: Path
    ld_library_path: str
    venv: Path

    @classmethod
    def discover(cls, venv: str | os.PathLike | None = None) -> "TritonInstall":
        venv = Path(venv or os.environ.get("HYMIREC_TRITON_VENV") or PROJECT_ROOT / ".venv-triton")
        meta = venv / "triton-env.json"
        if not meta.exists():
            raise TritonError(f"{meta} not found: run tools/setup.d/30-triton.sh (or `make setup`) first")
        raw = json.loads(meta.read_text())
        install = cls(Path(raw["tritonserver"]), Path(raw["backend_dir"]), raw["ld_library_path"], Path(raw["venv"]))
        if not install.tritonserver.exists():
            raise TritonError(f"{install.tritonserver} missing: re-run tools/setup.d/30-triton.sh")
        return install

    def env(self, base: dict | None = None) -> dict:
        env = dict(base if base is not None else os.environ)
        env["LD_LIBRARY_PATH"] = self.ld_library_path + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env["VIRTUAL_ENV"] = str(self.venv)
        for key in ("PYTHONPATH", "PYTHONHOME"):
            env.pop(key, None)
        env.setdefault("OMP_NUM_THREADS", "1")
        return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------------ control
def _read_pbtxt_json(repo: Path, model: str) -> dict:
    """config.pbtxt → the JSON form Triton accepts as a load-time config override."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    text = (repo / model / "config.pbtxt").read_text()
    msg = text_format.Parse(text, model_config_pb2.ModelConfig())
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


class TritonControl:
    """Model control against a running server (explicit mode) through its gRPC endpoint."""

    def __init__(self, grpc_url: str, repo: str | os.PathLike | None = None, timeout_s: float = 120.0,
                 control_key: str | None = None):
        self.grpc_url = grpc_url
        self.repo = Path(repo) if repo is not None else None
        self.timeout_s = timeout_s
        # Sent on every model-repository call (serving/triton_access.py); a server started without a key ignores it.
        self._headers = grpc_headers(control_key or control_key_from_env())
        self._client = None

    def _refused(self, what: str, exc: Exception) -> TritonError:
        return refused(what, self.grpc_url, self._headers is not None, exc)

    @property
    def client(self):
        if self._client is None:
            import tritonclient.grpc as grpcclient

            self._client = grpcclient.InferenceServerClient(self.grpc_url)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    # -- state
    def ready_versions(self, model: str) -> list[int]:
        try:
            index = self.client.get_model_repository_index(headers=self._headers, as_json=True).get("models", [])
        except Exception as exc:  # noqa: BLE001
            raise self._refused("reading the model repository index", exc) from None
        return sorted(int(m["version"]) for m in index
                      if m.get("name") == model and m.get("state") == "READY" and m.get("version"))

    def is_ready(self, model: str, version: int | None = None) -> bool:
        try:
            return bool(self.client.is_model_ready(model, "" if version is None else str(version)))
        except Exception:  # noqa: BLE001
            return False

    def served_state(self, model: str) -> dict:
        if self.repo is None:
            return {}
        path = self.repo / model / SERVED_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    def _write_state(self, model: str, state: dict) -> None:
        if self.repo is None:
            return
        path = self.repo / model / SERVED_FILE
        tmp = path.with_name(SERVED_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, path)

    # -- actions
    def load(self, model: str, versions: Sequence[int] | None = None) -> None:
        """Load (or reload) `model`; with `versions`, exactly those versions (config override). Without, the
        version recorded in served.json when there is one, else the config's policy (latest)."""
        if versions is None:
            served = self.served_state(model).get("version")
            versions = [int(served)] if served else None
        config = None
        if versions is not None:
            if self.repo is None:
                raise TritonError("pinning versions needs the model repository path")
            cfg = _read_pbtxt_json(self.repo, model)
            cfg["version_policy"] = {"specific": {"versions": [int(v) for v in sorted(set(versions))]}}
            config = json.dumps(cfg)
        try:
            self.client.load_model(model, headers=self._headers, config=config)
        except Exception as exc:  # noqa: BLE001
            raise self._refused(f"loading {model} (versions {versions})", exc) from None
        for v in versions or [None]:
            self._wait_ready(model, v)

    def unload(self, model: str) -> None:
        try:
            self.client.unload_model(model, headers=self._headers)
        except Exception as exc:  # noqa: BLE001
            raise self._refused(f"unloading {model}", exc) from None

    def _wait_ready(self, model: str, version: int | None) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.is_ready(model, version):
                return
            time.sleep(0.05)
        raise TritonError(f"{model} version {version} not READY after {self.timeout_s:.0f}s")

    def rollout(self, model: str, new_version: int) -> dict:
        """Serve `new_version` of `model`: load it next to the current version(s), then drop the old ones."""
        new_version = int(new_version)
        if self.repo is not None and not (self.repo / model / str(new_version)).is_dir():
            raise TritonError(f"{self.repo / model / str(new_version)} does not exist")
        before = self.ready_versions(model)
        started = time.perf_counter()
        if before and before != [new_version]:
            self.load(model, sorted(set(before) | {new_version}))  # N and N+1 both READY
        self.load(model, [new_version])  # unloads N
        after = self.ready_versions(model)
        if after != [new_version]:
            raise TritonError(f"rollout of {model} v{new_version} ended with versions {after} ready")
        state = self.served_state(model)
        history = list(state.get("history", [])) or before[-1:]
        if not history or history[-1] != new_version:
            history.append(new_version)
        self._write_state(model, {"version": new_version, "history": history,
                                  "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return {"model": model, "from": before, "to": new_version, "seconds": time.perf_counter() - started}

    def rollback(self, model: str) -> dict:
        """Roll back to the version served before the current one (served.json history)."""
        state = self.served_state(model)
        history = list(state.get("history", []))
        if len(history) < 2:
            raise TritonError(f"no earlier version of {model} to roll back to (history {history})")
        target = history[-2]
        result = self.rollout(model, target)
        # The rollback consumes the newest entry: history ends at the target again.
        self._write_state(model, {"version": target, "history": history[:-1],
                                  "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return result


def rollout(repo: str | os.PathLike, model: str, new_version: int, url: str) -> dict:
    """Load `new_version` of `model` on the server at `url` (gRPC host:port) before unloading the old one
    (sending HYMIREC_TRITON_CONTROL_KEY when set)."""
    control = TritonControl(url, repo)
    try:
        return control.rollout(model, new_version)
    finally:
        control.close()


def rollback(repo: str | os.PathLike, model: str, url: str) -> dict:
    control = TritonControl(url, repo)
    try:
        return control.rollback(model)
    finally:
        control.close()


# ------------------------------------------------------------------------------------------------ process
class TritonServer:
    """One tritonserver process on loopback. No I/O until start()."""

    def __init__(self, repo: str | os.PathLike, models: Iterable[str] = (), *, http_port: int | None = None,
                 grpc_port: int | None = None, log_path: str | os.PathLike | None = None,
                 install: TritonInstall | None = None, startup_timeout_s: float = 120.0,
                 control_key: str | None = None, poll_s: int | None = None):
        self.repo = Path(repo).resolve()
        # poll_s: --model-control-mode=poll, the server follows its repository's files (config.pbtxt version pins)
        # every poll_s seconds by itself, which is how several replicas follow a release (no per-pod API call)
        self.poll_s = poll_s
        self.control_key = control_key or control_key_from_env()
        self.models = list(models)
        self.http_port, self.grpc_port = http_port, grpc_port
        self.log_path = Path(log_path) if log_path else None
        self.install = install
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self.ready_seconds: float | None = None
        self._log_handle = None
        self._control: TritonControl | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def control(self) -> TritonControl:
        if self._control is None:
            self._control = TritonControl(self.grpc_url, self.repo, control_key=self.control_key)
        return self._control

    def command(self) -> list[str]:
        cmd = [str(self.install.tritonserver), f"--model-repository={self.repo}",
               f"--backend-directory={self.install.backend_dir}",
               *(["--model-control-mode=poll", f"--repository-poll-secs={int(self.poll_s)}"] if self.poll_s
                 else ["--model-control-mode=explicit"]),
               "--http-address=127.0.0.1", f"--http-port={self.http_port}",
               "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
               "--allow-metrics=false", "--allow-sagemaker=false", "--allow-vertex-ai=false",
               "--exit-on-error=false", "--log-verbose=0"]
        return cmd + restricted_flags(self.control_key)

    def start(self) -> "TritonServer":
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.install = self.install or TritonInstall.discover()
        self.http_port = self.http_port or free_port()
        self.grpc_port = self.grpc_port or free_port()
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_handle = open(self.log_path, "ab")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            self.command(), env=self.install.env(), cwd=str(self.repo),
            stdout=self._log_handle or subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while not self._http_ok("/v2/health/ready"):
            if self.proc.poll() is not None:
                raise TritonError(f"tritonserver exited with {self.proc.returncode} during start-up "
                                  f"(log: {self.log_path or 'disabled'})\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TritonError(f"tritonserver not ready after {self.startup_timeout_s:.0f}s\n{self.log_tail()}")
            time.sleep(0.05)
        for model in self.models:
            self.control.load(model)
        self.ready_seconds = time.perf_counter() - started
        return self

    def _http_ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=1.0) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self._http_ok("/v2/health/live")

    def log_tail(self, n: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def kill(self) -> None:
        """Hard kill (SIGKILL to the server's own process group): simulates a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        self.proc = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    # convenience passthroughs
    def load(self, model: str, versions: Sequence[int] | None = None) -> None:
        self.control.load(model, versions)

    def unload(self, model: str) -> None:
        self.control.unload(model)

    def rollout(self, model: str, new_version: int) -> dict:
        return self.control.rollout(model, new_version)

    def rollback(self, model: str) -> dict:
        return self.control.rollback(model)

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """python -m serving.triton_server REPO [--model llm] : run until Ctrl-C (for `make demo` / manual use)."""
    import argparse

    parser = argparse.ArgumentParser(prog="serving.triton_server")
    parser.add_argument("repo")
    parser.add_argument("--model", action="append", default=[])
    parser.add_argument("--http-port", type=int)
    parser.add_argument("--grpc-port", type=int)
    args = parser.parse_args(argv)
    server = TritonServer(args.repo, args.model, http_port=args.http_port, grpc_port=args.grpc_port)
    server.start()
    print(f"tritonserver ready in {server.ready_seconds:.2f}s  grpc={server.grpc_url} http={server.http_url}", flush=True)
    try:
        while server.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
