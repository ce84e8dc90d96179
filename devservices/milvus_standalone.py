"""The real Milvus standalone server (PyPI `milvus==2.3.5`, "embedded Milvus": the Go server with embedded etcd,
RocksMQ and local storage), started by the project like Kafka and Redis.

Why this and not Milvus Lite 3.x: Lite 3 walks every row in Python on each search (~55 ms at 100k rows, GIL-bound,
so concurrent searches serialise); this server answers the same search in a few ms with real HNSW and real aliases,
and it is the same server (and client code path) production runs. See docs/serving-performance.md for the measurements.

Loopback only. Milvus 2.3 binds its gRPC ports on every interface and has no listen-address setting, so the server
runs in its own network namespace (`unshare -n`, only `lo` inside) and is reached through socat relays:
`127.0.0.1:<free port>` here → a Unix socket in the data directory → `127.0.0.1:19530` inside the namespace. Nothing
it opens is reachable from another host, and two servers never collide on Milvus' fixed internal ports (etcd 2379
and 2380, the coordinators'), because each has its own namespace.

    server = MilvusStandalone(data_dir).start()   # ~10 s
    server.uri                                      # "http://127.0.0.1:PORT"
    server.kill(); server.start()                   # outage tests: same data, same port
    server.stop()

Binaries: the wheel ships them lzma-compressed; they are unpacked once into .cache/milvus-<version>/bin
(tools/setup.d/60-milvus.sh, or lazily here), not into every data directory.
"""
from __future__ import annotations

import fcntl
import hashlib
import lzma
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ._proc import free_port, stop_process, tail, wait_until

ROOT = Path(__file__).resolve().parents[1]
INNER_PORT = 19530  # the proxy's port inside the namespace (free there by construction)


class MilvusUnavailable(RuntimeError):
    """The Milvus standalone server cannot be started here (package, socat or network namespaces missing)."""


def _package():
    try:
        import milvus  # the `milvus` wheel: binaries + config template, no Python client
    except ImportError as exc:  # pragma: no cover - setup installs it
        raise MilvusUnavailable("PyPI package `milvus==2.3.5` is not installed: run `make setup`") from exc
    return milvus


def binaries(cache_root: str | os.PathLike | None = None) -> Path:
    """Directory holding the unpacked `milvus` executable and its shared libraries (unpacked on first use)."""
    milvus = _package()
    src = Path(milvus.__file__).parent / "data" / "bin"
    dest = Path(cache_root or os.environ.get("HYMIREC_MILVUS_BIN_CACHE", ROOT / ".cache")) / f"milvus-{milvus.__version__}" / "bin"
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / ".lock", "w") as lock:  # two test processes may unpack at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        for packed in sorted(src.glob("*.lzma")):
            target = dest / packed.name[:-5]
            stamp = target.with_name(target.name + ".md5")
            digest = hashlib.md5(packed.read_bytes()).hexdigest()
            if target.exists() and stamp.exists() and stamp.read_text().strip() == digest:
                continue
            tmp = target.with_name(target.name + ".part")
            with lzma.open(packed) as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            tmp.chmod(0o755)
            tmp.replace(target)
            stamp.write_text(digest)
    return dest


def _write_config(data_dir: Path, extra: dict[str, str]) -> None:
    """milvus.yaml from the wheel's template, storage under data_dir (the template's own resolver would also bind
    ports on the host, which we do not need: inside the namespace the defaults are free)."""
    from milvus import MilvusServerConfig

    config = MilvusServerConfig(data_dir=str(data_dir))
    for key, value in extra.items():
        config.set(key, value)
    config.resolve_storage()  # the ports keep the template's defaults: free inside the namespace
    config.write_config()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """PR_SET_PDEATHSIG: the server and its relay are killed when the process that started them dies, so a
    crashed test run leaves no Milvus behind (it survives the exec of unshare → sh → milvus)."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _require_tools() -> dict[str, str]:
    tools = {name: shutil.which(name) for name in ("unshare", "socat", "ip", "setpriv")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        raise MilvusUnavailable(f"Milvus standalone needs {', '.join(missing)} (tools/setup.d/60-milvus.sh installs "
                                "them: Debian packages util-linux (unshare, setpriv), socat, iproute2)")
    return tools  # type: ignore[return-value]


class MilvusStandalone:
    """No I/O until start(). `data_dir` keeps the server's etcd, RocksMQ and segments between restarts."""

    def __init__(self, data_dir: str | os.PathLike, port: int | None = None, start_timeout: float = 120.0,
                 extra_config: dict[str, str] | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.port = port or None  # None / 0: a free port at start()
        self.start_timeout = start_timeout
        # Dotted milvus.yaml keys. A 10 s session lease (default 30 s): after a kill -9 the restarted server waits for
        # its previous sessions to expire before the collection serves again (~27 s with 30 s).
        self.extra_config = {"common.session.ttl": "10", **(extra_config or {})}
        self.proc: subprocess.Popen | None = None
        self.relay: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / "milvus-stdout.log"

    @property
    def socket_path(self) -> Path:
        path = self.data_dir / "run" / "proxy.sock"
        if len(str(path)) <= 100:  # a Unix socket path has at most 107 bytes
            return path
        digest = hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"hymirec-milvus-{digest}.sock"

    def start(self) -> "MilvusStandalone":
        tools = _require_tools()
        bin_dir = binaries()
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "run").mkdir(exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        _write_config(self.data_dir, self.extra_config)
        self.port = self.port or free_port()
        self.socket_path.unlink(missing_ok=True)
        env = {**os.environ, "DEPLOY_MODE": "STANDALONE", "MILVUS_RUN_DIR": str(self.data_dir / "run"),
               "LD_LIBRARY_PATH": f"{bin_dir}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
        # Inside a fresh network namespace: bring lo up, relay the Unix socket to the proxy, exec the server.
        # setpriv: the inner relay dies with the server (its parent after the exec).
        # `nodelay` on both TCP ends: without it Nagle meets delayed ACKs and ~2 % of searches wait 40 ms
        # (measured: p99 44 ms through the relays vs 7.8 ms direct; 7.3 ms with nodelay).
        inner = (f'"{tools["ip"]}" link set lo up && '
                 f'"{tools["setpriv"]}" --pdeathsig KILL "{tools["socat"]}" '
                 f'UNIX-LISTEN:"{self.socket_path}",fork,mode=600 TCP:127.0.0.1:{INNER_PORT},nodelay & '
                 f'exec "{bin_dir / "milvus"}" run standalone')
        unshare = [tools["unshare"], "--net"] if os.geteuid() == 0 else [tools["unshare"], "--map-root-user", "--net"]
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([*unshare, "sh", "-c", inner], cwd=self.data_dir, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent)
            # Host side: loopback TCP → the Unix socket (one socat child per connection; gRPC keeps one open).
            self.relay = subprocess.Popen([tools["socat"], f"TCP-LISTEN:{self.port},bind=127.0.0.1,reuseaddr,fork,nodelay",
                                           f"UNIX-CONNECT:{self.socket_path}"], stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            log.close()
        try:
            wait_until(self._answers, self.start_timeout, f"Milvus standalone on {self.uri}",
                       alive=lambda: self.proc.poll() is None and self.relay.poll() is None,
                       log_tail=lambda: tail(str(self.log_path)), interval=0.3)
        except Exception:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _answers(self) -> bool:
        from pymilvus import MilvusClient

        client = MilvusClient(uri=self.uri, timeout=2.0)
        try:
            client.list_collections()
            return True
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the server and its relays (an outage); start() brings it back on the same port and data."""
        for proc in (self.relay, self.proc):
            if proc is not None and proc.poll() is None:
                try:
                    os.killpg(proc.pid, 9)
                except ProcessLookupError:
                    pass
                proc.wait(10)
        self.proc = self.relay = None

    def stop(self) -> None:
        stop_process(self.relay, timeout=5.0)
        stop_process(self.proc, timeout=5.0)  # a graceful stop takes ~20 s; the data is flushed, SIGKILL after 5 s
        self.proc = self.relay = None

    def __enter__(self) -> "MilvusStandalone":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
