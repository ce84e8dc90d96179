"""Peer libraries in the quality bench: registry, venv set-up and one protocol run (docs/peers.md).

    peer = PEERS["rectools-sasrec"]                  # library, runner --model, display label
    ensure_peer_env(peer.library)                     # bench/peers/setup.sh LIB (idempotent, output visible)
    run = run_peer(peer, split_dir, out_dir, epochs=20, time_budget=900, seed=0)
    run.topk, run.protocol_violations, run.result    # checked lists, history items dropped and counted

The runner is a subprocess of the library's own venv python (``.venv-peers/LIB/bin/python``), started in
its output folder, with a clean environment (no PYTHONPATH: runners never import this project), thread counts pinned, its stdout/stderr
streamed to ``OUT/run.log`` and echoed as progress lines, a timeout derived from the time budget, and on
failure a :class:`PeerError` that carries the tail of its stderr.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bench.peers.outputs import SplitView, clean_lists, load_peer_output, read_split
from bench.peers.run_state import EXIT_PAUSED, holds_checkpoint  # the runners' pause contract (docs/peers.md)

ROOT = Path(__file__).resolve().parents[2]
PEERS_VENV_DIR = ROOT / ".venv-peers"
SETUP_SCRIPT = ROOT / "bench" / "peers" / "setup.sh"


class PeerError(RuntimeError):
    """A peer could not be installed or its runner failed / timed out."""


class PeerPaused(PeerError):
    """The runner stopped at ``--pause-after`` with a checkpoint in its output folder: the same call resumes."""


@dataclass(frozen=True)
class Peer:
    name: str  # registry key, also the method key in the bench results
    library: str  # bench/peers/<library>/, .venv-peers/<library>/
    model: str  # the runner's --model argument
    label: str  # display label in the table

    @property
    def runner(self) -> Path:
        return ROOT / "bench" / "peers" / self.library / "run.py"


PEERS: dict[str, Peer] = {p.name: p for p in (
    Peer("rectools-sasrec", "rectools", "sasrec", "SASRec (RecTools)"),
    Peer("rectools-bert4rec", "rectools", "bert4rec", "BERT4Rec (RecTools)"),
    Peer("recbole-sasrec", "recbole", "sasrec", "SASRec (RecBole 1.2.1)"),
    Peer("recbole-sine", "recbole", "sine", "SINE (RecBole 1.2.1)"),
    Peer("rechub-comirec-sa", "rechub", "comirec_sa", "ComiRec-SA (torch-rechub)"),
    Peer("rechub-mind", "rechub", "mind", "MIND (torch-rechub)"),
)}


def parse_peers(spec: str | None) -> list[Peer]:
    """``all`` | ``none`` | comma list of peer names or library names (``rectools`` = both its models)."""
    spec = (spec or "none").strip()
    if spec == "all":
        return list(PEERS.values())
    if spec in ("none", ""):
        return []
    chosen: list[Peer] = []
    libraries = {p.library for p in PEERS.values()}
    for part in (s.strip() for s in spec.split(",") if s.strip()):
        if part in PEERS:
            found = [PEERS[part]]
        elif part in libraries:
            found = [p for p in PEERS.values() if p.library == part]
        else:
            raise ValueError(f"unknown peer '{part}': choose from all, none, {', '.join(PEERS)} "
                             f"or a library ({', '.join(sorted(libraries))})")
        chosen += [p for p in found if p not in chosen]
    return chosen


def peer_python(library: str) -> Path:
    return PEERS_VENV_DIR / library / "bin" / "python"


def ensure_peer_env(library: str, log: Callable[[str], None] = print) -> Path:
    """Create/refresh ``.venv-peers/LIB`` with bench/peers/setup.sh (idempotent) → the venv's python."""
    requirements = ROOT / "bench" / "peers" / library / "requirements.txt"
    if not requirements.is_file():
        raise PeerError(f"peer library '{library}': no {requirements.relative_to(ROOT)}")
    log(f"[peers] checking the {library} environment (bench/peers/setup.sh {library})")
    # setup.sh's own output (pip progress) goes straight to our stdout/stderr: visible while it installs.
    rc = subprocess.run(["bash", str(SETUP_SCRIPT), library], cwd=ROOT).returncode
    python = peer_python(library)
    if rc != 0 or not python.exists():
        raise PeerError(f"bench/peers/setup.sh {library} failed (exit {rc}); see its output above")
    return python


def peer_timeout(time_budget: float | None) -> float:
    """Wall-clock limit of one runner: the training budget three times over, plus 30 min for loading,
    inference and writing (generous: a timeout means a hung runner, not a slow one); 12 h without a budget."""
    return 3 * float(time_budget) + 1800 if time_budget else 12 * 3600.0


def peer_env(seed: int, threads: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    n = str(threads or os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[key] = n
    env.update(PYTHONHASHSEED=str(seed), PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg")
    return env


def _pump(stream, sink, tail: deque, echo: Callable[[str], None] | None, every: float = 15.0) -> None:
    """Copy a child's stream to the log file; keep its last lines; echo lines (\\r-redrawn progress bars
    at most once per `every` seconds)."""
    last_echo, buf = 0.0, ""
    for chunk in iter(lambda: stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096), b""):
        text = chunk.decode("utf-8", "replace")
        sink.write(text)
        sink.flush()
        buf += text
        while True:
            cut = min((i for i in (buf.find("\n"), buf.find("\r")) if i >= 0), default=-1)
            if cut < 0:
                break
            line, ended_by, buf = buf[:cut].rstrip(), buf[cut], buf[cut + 1:]
            if not line:
                continue
            tail.append(line)
            now = time.monotonic()
            if echo and (ended_by == "\n" or now - last_echo > every):
                echo(line)
                last_echo = now
    if buf.strip():
        tail.append(buf.strip())
        if echo:
            echo(buf.strip())


@dataclass
class PeerRun:
    peer: Peer
    result: dict  # the runner's result.json
    topk: np.ndarray  # int64 [U_test, topk], checked, history items and duplicates dropped
    protocol_violations: int  # history items the runner still returned (dropped)
    duplicate_items: int  # repeated ids within a row (dropped)
    wall_seconds: float
    out_dir: Path


def run_peer(peer: Peer | str, split_dir: str | Path, out_dir: str | Path, *, epochs: int,
             time_budget: float | None, seed: int, dim: int = 64, max_len: int = 50, topk: int = 100,
             python: str | Path | None = None, runner: str | Path | None = None, timeout: float | None = None,
             threads: int | None = None, split: SplitView | None = None, pause_after: float | None = None,
             patience: int | None = None, log: Callable[[str], None] | None = print) -> PeerRun:
    """One runner invocation under the protocol, then the output checks (see module doc).

    ``python`` / ``runner`` default to the library's venv and ``bench/peers/LIB/run.py``; ``split`` (a
    :func:`read_split` of ``split_dir``) can be passed to avoid re-reading the files.
    """
    peer = PEERS[peer] if isinstance(peer, str) else peer
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("topk_test.npy", "result.json"):
        (out_dir / stale).unlink(missing_ok=True)  # a failed run must not pass on old outputs
    python = Path(python) if python else peer_python(peer.library)
    runner = Path(runner) if runner else peer.runner
    if os.sep in str(python) and not Path(python).exists():
        raise PeerError(f"{peer.name}: no python at {python} (run bench/peers/setup.sh {peer.library})")
    if not runner.is_file():
        raise PeerError(f"{peer.name}: runner {runner} not found")
    # absolute paths: the child runs in out_dir (abspath, not resolve: a venv's python is a symlink to keep)
    exe = os.path.abspath(python) if os.sep in str(python) else str(python)
    cmd = [exe, str(runner.resolve()), "--split", str(Path(split_dir).resolve()), "--out", str(out_dir.resolve()),
           "--model", peer.model, "--epochs", str(epochs), "--seed", str(seed), "--dim", str(dim),
           "--max-len", str(max_len), "--topk", str(topk)]
    if time_budget:
        cmd += ["--time-budget", str(float(time_budget))]
    if patience is not None:  # early stopping on validation NDCG@10; omitted: the runner's own default
        cmd += ["--patience", str(int(patience))]
    if pause_after is not None:
        cmd += ["--pause-after", str(float(pause_after))]
    resuming = holds_checkpoint(out_dir)  # a runner's own checkpoint: this call goes on from it
    timeout = timeout if timeout is not None else peer_timeout(time_budget)
    echo = (lambda line: log(f"[{peer.name}] {line}")) if log else None
    if log:
        log(f"[{peer.name}] {' '.join(cmd)}")
    started = time.perf_counter()
    tails: dict[str, deque[str]] = {"stdout": deque(maxlen=40), "stderr": deque(maxlen=40)}
    with (out_dir / "run.log").open("a" if resuming else "w") as sink:  # a resumed run's log keeps its start
        # cwd = the run's own folder: libraries that write log/ or saved/ next to them (RecBole) stay inside it
        proc = subprocess.Popen(cmd, cwd=out_dir, env=peer_env(seed, threads), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
        pumps = [threading.Thread(target=_pump, args=(getattr(proc, name), sink, tails[name], echo), daemon=True)
                 for name in tails]
        for t in pumps:
            t.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the runner's own process group (start_new_session)
            proc.wait()
            rc = None
        for t in pumps:
            t.join(timeout=10)
    wall = time.perf_counter() - started
    tail = "\n".join(list(tails["stderr"])[-15:] or list(tails["stdout"])[-15:])
    if rc is None:
        raise PeerError(f"{peer.name}: runner timed out after {timeout:.0f}s (log: {out_dir / 'run.log'})\n{tail}")
    if rc == EXIT_PAUSED:
        raise PeerPaused(f"{peer.name}: paused with a checkpoint in {out_dir}; the same command resumes it\n{tail}")
    if rc != 0:
        raise PeerError(f"{peer.name}: runner failed (exit {rc}; log: {out_dir / 'run.log'})\n{tail}")
    split = split if split is not None else read_split(split_dir)
    result, lists = load_peer_output(out_dir, split, topk)
    lists, violations, duplicates = clean_lists(lists, split.histories)
    if log and (violations or duplicates):
        log(f"[{peer.name}] protocol: {violations} history item(s) and {duplicates} duplicate(s) dropped")
    return PeerRun(peer, result, lists, violations, duplicates, wall, out_dir)
