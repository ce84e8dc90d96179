"""A real redis-server (Debian package) for tests: free loopback port, stopped and removed after. No persistence
unless ``persist=True`` (append-only file, fsync on every write), which the outage tests need: they stop the
server and start it again on the same port and data with :meth:`RedisServer.restart`. ``tls=(cert, key, ca)``
(PEM files; cert and key may be one file) serves TLS only: the plain port is closed (``--port 0``).

    with RedisServer() as r:
        r.url        # "127.0.0.1:PORT" (Feast connection_string)
        r.client().flushall()
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ._proc import free_port, stop_process, tail, wait_until


class RedisUnavailable(RuntimeError):
    """redis-server is not installed (tools/setup.d/10-redis.sh installs it)."""


class RedisServer:
    def __init__(self, workdir: str | Path | None = None, start_timeout: float = 20.0, password: str | None = None,
                 persist: bool = False, tls: tuple[str | Path, str | Path, str | Path] | None = None):
        self.tls = tuple(str(p) for p in tls) if tls else None
        self._own_dir = workdir is None
        self.persist = persist
        self.password = password  # --requirepass: clients must AUTH (the secret-redaction tests use it)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="redis-"))
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisUnavailable("redis-server not found: run tools/setup.d/10-redis.sh (apt-get install redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        # The password goes in on stdin as a config file, not argv (argv shows in process listings).
        # appendfsync always: a write acknowledged before a stop is on disk, so a restart loses nothing
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        ports = (["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.tls[0], "--tls-key-file",
                  self.tls[1], "--tls-ca-cert-file", self.tls[2], "--tls-auth-clients", "no"]
                 if self.tls else ["--port", str(self.port)])
        args = [binary, "-", "--bind", "127.0.0.1", *ports, "--save", "", *durability,
                "--dir", str(self.workdir), "--daemonize", "no", "--protected-mode", "yes",
                "--logfile", str(self.log_path), "--loglevel", "warning"]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        self.proc.stdin.write(f"requirepass {self.password}\n".encode() if self.password else b"")
        self.proc.stdin.close()
        try:
            wait_until(lambda: self.client().ping(), self.start_timeout, "redis-server",
                       alive=lambda: self.proc.poll() is None, log_tail=lambda: tail(str(self.log_path)),
                       interval=0.05)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def client(self):
        import redis
        # The readiness ping trusts the CA but not the host name: a test may serve a certificate for another host.
        tls = {"ssl": True, "ssl_ca_certs": self.tls[2], "ssl_check_hostname": False} if self.tls else {}
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2,
                           socket_connect_timeout=2, **tls)

    def restart(self, down_s: float = 0.0, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL with ``kill``), stay down ``down_s`` seconds, start it again on the
        same port and directory (the data survives only with ``persist=True``)."""
        if kill and self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        stop_process(self.proc, timeout=10)
        self.proc = None
        time.sleep(down_s)
        self.start()

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)
        self.proc = None
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
