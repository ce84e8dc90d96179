"""Make a release current, or roll back to the previous one, as a whole (core/releases.py says what a release is).

``activate(root, version)`` in order, each step safe to repeat:

1. Triton loads the release's LLM version *next to* the served one (both READY), so requests still pinned to the
   old release keep working;
2. the registry's ``production`` pointer flips (one atomic rename under the registry lock); the previous one is
   pushed on ``history``. This is the switch: serving and the stream processor follow it within their poll time;
3. ``current`` and the Milvus alias follow (for readers that use them: the CLI, older clients);
4. after ``settle_s`` (longer than the readers' poll interval plus a request), Triton unloads the old version,
   and every target's config.pbtxt pins the release's version, so a restarted Triton loads it again.

Several Triton replicas cannot each be reached by a control call through their Service; with
``HYMIREC_TRITON_POLL_S`` set they run in poll mode instead and steps 1 and 4 are config.pbtxt version pins that
every replica reads by itself (see :func:`activate`).

``rollback(root)`` activates the release on top of ``history`` and pops it. Nothing is rebuilt: every release
keeps its run directory, its Triton version on disk and its Milvus collection (the index keeps the served and the
previous collection), so a rollback takes seconds.
"""
from __future__ import annotations

import logging
import os
import time

from core.releases import ReleaseError, entry_for, read_registry, release_of
from orchestration.artifact_root import ArtifactRoot

log = logging.getLogger("orchestration.releases")

SETTLE_ENV = "HYMIREC_RELEASE_SETTLE_S"
POLL_ENV = "HYMIREC_TRITON_POLL_S"  # > 0: Triton runs in poll mode (several replicas); see activate()
DEFAULT_SETTLE_S = 3.0  # serving and the stream processor poll the registry every second by default


def _seconds(value: float | None, env: str, default: float) -> float:
    """``value``, else the environment variable ``env``, else ``default`` (a bad value names the variable)."""
    if value is not None:
        return float(value)
    raw = os.environ.get(env, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{env} must be a number of seconds, got {raw!r}") from None


def _triton_target(target: str | None) -> str:
    return target or os.environ.get("HYMIREC_TRITON_TARGET") or "local"


def activate(root: str | os.PathLike, version: int, *, triton_url: str | None = None, target: str | None = None,
             settle_s: float | None = None, triton_poll_s: float | None = None, push_history: bool = True) -> dict:
    """Make release ``version`` current (see the module docstring). Returns what was done, step by step.

    Triton is switched one of two ways. Explicit model control (``triton_url``, one server): load both versions
    through the repository API, later only the new one. Poll mode (``triton_poll_s`` > 0, HYMIREC_TRITON_POLL_S;
    servers started with --model-control-mode=poll, e.g. several chart replicas sharing the repository): pin both
    versions in config.pbtxt, wait until the servers polled it (and, with ``triton_url``, until the new version is
    READY), later pin only the new one; every replica follows the files, no API call has to reach each pod."""
    art = ArtifactRoot(root)
    reg = read_registry(art.root)
    release = release_of(entry_for(reg, version))
    if not release.run_dir.is_dir():
        raise ReleaseError(f"release {version}: run directory {release.run_dir} is missing")
    _check_collection(release)  # before anything changes: a release whose index is gone is refused whole
    previous = reg.get("production")
    steps: dict = {"version": release.version, "previous": previous}
    poll = _seconds(triton_poll_s, POLL_ENV, 0.0)
    repo = art.triton_repo / _triton_target(target)
    model, new = release.triton_model, release.triton_version

    control = None
    if triton_url:
        from serving.triton_server import TritonControl

        control = TritonControl(triton_url, repo)
    try:
        if poll > 0:  # the servers follow config.pbtxt: both versions first
            from training.export.triton_repo import pinned_versions

            old = pinned_versions(repo, model) or ([release_of(entry_for(reg, previous)).triton_version]
                                                   if previous is not None else [])
            steps["triton_loaded"] = _pin_on_disk(art, model, sorted(set(old) | {new}))
            _wait_polled(control, model, new, poll)
        elif control is not None:
            both = sorted(set(control.ready_versions(model)) | {new})
            control.load(model, both)  # old and new READY: in-flight requests keep their version
            steps["triton_loaded"] = both

        with art.locked_registry() as live:
            live.setdefault("history", [])
            if push_history and previous is not None and previous != release.version:
                live["history"].append(previous)
            live["production"] = release.version
        steps["registry"] = {"production": release.version}
        steps["current"] = art.swap_current(release.run_dir)
        steps["milvus_alias"] = _point_alias(release)

        if control is not None or poll > 0:
            steps["settle_s"] = _seconds(settle_s, SETTLE_ENV, DEFAULT_SETTLE_S)
            time.sleep(steps["settle_s"])  # readers poll the registry; requests pinned to the old version finish
        if control is not None and poll <= 0:
            control.load(model, [new])
            state = control.served_state(model)  # served.json: what TritonServer/TritonControl.load() restore
            history = [v for v in state.get("history", []) if v != new] + [new]
            control._write_state(model, {"version": new, "history": history, "release": release.version})
        steps["triton_pinned"] = _pin_on_disk(art, model, [new])  # what a restarted Triton loads
        if control is not None:
            steps["triton_served"] = control.ready_versions(model) if poll <= 0 else "polled"
    finally:
        if control is not None:
            control.close()
    log.info("release %s active (previous %s): %s", release.version, previous, steps)
    return steps


def _wait_polled(control, model: str, version: int, poll: float, timeout_s: float = 300.0) -> None:
    """Wait until servers in poll mode loaded ``version``: READY where ``control`` reaches one server, then two
    more poll periods so every replica has read the same files."""
    deadline = time.monotonic() + timeout_s
    if control is not None:
        while not control.is_ready(model, version):
            if time.monotonic() > deadline:
                raise ReleaseError(f"Triton did not load {model} version {version} within {timeout_s:.0f}s of "
                                   "pinning it (is it started with --model-control-mode=poll?)")
            time.sleep(min(poll, 1.0))
    time.sleep(2 * poll)


def rollback(root: str | os.PathLike, **kwargs) -> dict:
    """Activate the release before the current one (top of ``history``) and pop it from the history."""
    art = ArtifactRoot(root)
    reg = read_registry(art.root)
    history = list(reg.get("history", []))
    if not history:
        raise ReleaseError(f"no earlier release to roll back to (production {reg.get('production')}, empty history)")
    target = int(history[-1])
    result = activate(art.root, target, push_history=False, **kwargs)
    with art.locked_registry() as live:
        if live.get("history") and int(live["history"][-1]) == target:
            live["history"].pop()
    return {**result, "rolled_back_from": reg.get("production")}


def show(root: str | os.PathLike) -> dict:
    """The current release, the rollback target and every release the registry knows."""
    reg = read_registry(root)
    releases = []
    for entry in reg.get("models", []):
        try:
            releases.append(release_of(entry).describe())
        except ReleaseError as exc:
            releases.append({"version": entry.get("version"), "error": str(exc)})
    history = reg.get("history", [])
    return {"production": reg.get("production"), "rollback_to": history[-1] if history else None,
            "history": history, "releases": releases}


def logged_items(inter_path: str | os.PathLike) -> dict[str, list[str]]:
    """{raw user id: raw item ids oldest first} of an interaction log in RecBole's .inter layout (the retrain's
    snapshot: user, item, timestamp)."""
    import pandas as pd

    try:
        frame = pd.read_csv(inter_path, sep="\t", dtype=str, keep_default_na=False)
        frame.columns = ["user_id", "item_id", "timestamp"]
        frame["timestamp"] = frame["timestamp"].astype(float)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{inter_path}: not a user/item/timestamp interaction log: {exc}") from exc
    frame = frame.sort_values(["user_id", "timestamp"], kind="stable")
    return {str(u): [str(i) for i in g["item_id"]] for u, g in frame.groupby("user_id", sort=False)}


def migrate_to_current(root: str | os.PathLike, store, inter_path: str | os.PathLike, progress: bool = False) -> dict:
    """Move the stored histories of the log's users to the current release's codebook
    (features.codebook_migration.migrate_store): rebuilt from the log (each logged item's codes in the release's
    item-code table; as good as a fresh encode, bench/records/codebook_migration.json), by decode → encode where
    the log does not end with the stored row; rows on a codebook no release has are reported, never guessed."""
    from core.releases import codebook_paths, current_release
    from features.codebook_migration import CodebookLibrary, ItemCodeTable, migrate_store

    release = current_release(root)
    if release is None:
        raise ReleaseError(f"{root}: no current release to migrate to")
    log_of = logged_items(inter_path)
    library = CodebookLibrary.from_paths(codebook_paths(root).values())
    report = migrate_store(store, list(log_of), library, release.codebook_id, log=log_of,
                           item_codes=ItemCodeTable.from_path(release.run_dir), progress=progress)
    log.info("history migration to release %s: %s", release.version,
             {k: v for k, v in report.as_dict().items() if isinstance(v, (int, float))})
    return {**report.as_dict(), "release": release.version, "codebook_id": release.codebook_id,
            "users": len(log_of)}


def _pin_on_disk(art: ArtifactRoot, model: str, versions: list[int]) -> dict:
    """Pin ``versions`` of the LLM in every target's config.pbtxt: what a Triton in poll mode serves, and what
    a Triton that restarts (the chart starts it with --load-model=*) loads, rather than the newest on disk."""
    from training.export.triton_repo import TARGETS, pin_versions

    pinned = {}
    for target in TARGETS:
        if (art.triton_repo / target / model / "config.pbtxt").exists():
            pin_versions(art.triton_repo / target, model, versions)
            pinned[target] = list(versions)
    return pinned


def _check_collection(release) -> None:
    from serving.index import ItemIndex

    index = ItemIndex(release.milvus_uri, release.milvus_alias)
    try:
        exists = index.start(load=False).client.has_collection(release.milvus_collection)
    except Exception as exc:  # noqa: BLE001 - any client error: the release cannot be checked, so not activated
        raise ReleaseError(f"release {release.version}: Milvus at {release.milvus_uri} cannot be asked for "
                           f"{release.milvus_collection} ({str(exc).splitlines()[0][:200]}); nothing was changed") from exc
    finally:
        index.close()
    if not exists:
        raise ReleaseError(f"release {release.version}: Milvus collection {release.milvus_collection} is gone "
                           f"from {release.milvus_uri}; nothing was changed")


def _point_alias(release) -> str:
    from serving.index import ItemIndex

    index = ItemIndex(release.milvus_uri, release.milvus_alias).start(load=False)
    try:
        index.point_alias(release.milvus_collection)
    finally:
        index.close()
    return release.milvus_collection
