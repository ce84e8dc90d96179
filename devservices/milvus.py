"""Milvus Lite as a separate server process (`milvus-lite server`), so tests can make Milvus unavailable while
the app is serving (kill it) and bring it back. Loopback only, free port."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from serving.triton_server import free_port


class MilvusLiteServer:
    def __init__(self, data_dir: str | os.PathLike, port: int | None = None, log_path: str | os.PathLike | None = None):
        self.data_dir = Path(data_dir)
        self.port = port
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "MilvusLiteServer":
        self.port = self.port or free_port()
        exe = Path(sys.executable).with_name("milvus-lite")
        cmd = [str(exe), "server", "--data-dir", str(self.data_dir), "--host", "127.0.0.1", "--port", str(self.port)]
        if self.log_path:
            self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        from pymilvus import MilvusClient

        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"milvus-lite server exited with {self.proc.returncode}")
            try:
                client = MilvusClient(uri=self.uri, timeout=2.0)
                client.list_collections()
                client.close()
                return self
            except Exception:  # noqa: BLE001
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"milvus-lite server not ready on {self.uri} after {timeout}s")
                time.sleep(0.2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
