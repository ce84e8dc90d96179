"""The release registry's readers and the `hymirec release` command, without services (the whole promote and
rollback against real Triton and Milvus is tests/dags/test_release_triton_e2e.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _entry(root: Path, version: int) -> dict:
    run = root / "intervals" / f"k{version}" / "run"
    run.mkdir(parents=True)
    return {"version": version, "run_dir": str(run), "codebook_id": f"cb{version}",
            "triton": {"model": "llm", "version": version},
            "milvus": {"uri": "http://127.0.0.1:1", "alias": "hymirec_items", "collection": f"hymirec_items_v{version}"}}


@pytest.fixture
def root(tmp_path):
    from orchestration.artifact_root import ArtifactRoot

    with ArtifactRoot(tmp_path).locked_registry() as reg:
        reg["models"] = [_entry(tmp_path, 1), _entry(tmp_path, 2)]
        reg["production"], reg["history"] = 2, [1]
    return tmp_path


def _flip(root: Path, version: int) -> None:
    from orchestration.artifact_root import ArtifactRoot

    with ArtifactRoot(root).locked_registry() as reg:
        reg["production"] = version


def test_watcher_reports_each_flip_once(root):
    from core.releases import ReleaseWatcher, current_release

    assert current_release(root).describe()["triton"] == "llm/2"
    watcher = ReleaseWatcher(root, every_s=0.0)
    assert watcher.poll().version == 2
    assert watcher.poll() is None  # nothing changed
    _flip(root, 1)
    assert watcher.poll().version == 1 and watcher.poll() is None
    watcher.forget()  # a reader whose switch failed is told again
    assert watcher.poll().version == 1


def test_follower_keeps_the_served_release_when_the_next_fails_to_load(root):
    from serving.served_release import ReleaseFollower

    served, attempts = [], []

    def load(release):
        attempts.append(release.version)
        if len(attempts) == 1:
            raise OSError("encoder.onnx: truncated")  # e.g. a half-copied artifact
        return f"bundle-{release.version}"

    follower = ReleaseFollower(root, every_s=0.0, load=load, swap=served.append)
    from core.releases import current_release

    follower.prime(current_release(root))
    assert follower.check() is False and served == []  # release 2 is the one already served
    _flip(root, 1)
    assert follower.check() is False and follower.failures == 1 and served == []  # stays on 2
    assert follower.check() is True and served == ["bundle-1"]  # retried at the next poll
    assert attempts == [1, 1] and follower.switches == 1


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hymirec.cli", "release", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_release_cli_shows_and_refuses_bad_requests_clearly(root, tmp_path_factory):
    shown = _cli("show", "--root", str(root))
    assert shown.returncode == 0, shown.stderr
    out = json.loads(shown.stdout)
    assert out["production"] == 2 and out["rollback_to"] == 1
    assert [r["milvus_collection"] for r in out["releases"]] == ["hymirec_items_v1", "hymirec_items_v2"]

    unknown = _cli("activate", "--root", str(root), "--version", "9", "--triton-url", "off")
    assert unknown.returncode == 2 and "no release 9 in the registry" in unknown.stderr

    empty = tmp_path_factory.mktemp("empty")
    nothing = _cli("rollback", "--root", str(empty), "--triton-url", "off")
    assert nothing.returncode == 2 and "no earlier release to roll back to" in nothing.stderr
    missing = _cli("show", "--root", str(empty / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    registry = json.loads((root / "registry.json").read_text())
    assert registry["production"] == 2 and registry["history"] == [1]  # the refused calls changed nothing


def test_a_release_whose_collection_is_gone_is_refused_whole(root):
    from orchestration.artifact_root import ArtifactRoot

    with ArtifactRoot(root).locked_registry() as reg:  # a Milvus Lite file without release 1's collection
        reg["models"][0]["milvus"]["uri"] = str(root / "milvus.db")
    before = (root / "registry.json").read_text()
    refused = _cli("rollback", "--root", str(root), "--triton-url", "off")
    assert refused.returncode == 2 and "hymirec_items_v1 is gone" in refused.stderr, refused.stderr[-500:]
    assert (root / "registry.json").read_text() == before and not (root / "current").exists()


def _codebook_release(root: Path, version: int, items: list[str], seed: int) -> dict:
    """A run directory with a fitted codebook and its items' codes (what migration reads)."""
    import numpy as np

    from core.artifacts import sha256_file
    from features.codebook import CodebookConfig, ResidualCodebook

    entry = _entry(root, version)
    run = Path(entry["run_dir"])
    emb = np.random.default_rng(seed).normal(size=(len(items), 16)).astype(np.float32)
    cb = ResidualCodebook.fit(emb, CodebookConfig(n_layers=3, codebook_size=16, kmeans_iters=5, seed=seed))
    cb.save(run / "codebook.npz")
    (run / "item_ids.json").write_text(json.dumps(["<pad>", *items]))
    np.save(run / "item_codes.npy", np.concatenate([np.zeros((1, 3), np.uint16), cb.encode(emb).astype(np.uint16)]))
    return {**entry, "codebook_id": sha256_file(run / "codebook.npz")}


def test_release_migrate_moves_histories_to_the_current_codebook(tmp_path):
    import numpy as np

    from features.store import StoreConfig, open_store
    from features.store.base import UserState
    from orchestration.artifact_root import ArtifactRoot

    items = [f"it{k}" for k in range(40)]
    old, new = _codebook_release(tmp_path, 1, items, seed=1), _codebook_release(tmp_path, 2, items, seed=2)
    with ArtifactRoot(tmp_path).locked_registry() as reg:
        reg["models"], reg["production"], reg["history"] = [old, new], 2, [1]
    table = {v: dict(zip(items, np.load(Path(e["run_dir"]) / "item_codes.npy")[1:])) for v, e in ((1, old), (2, new))}
    logs = {f"u{n}": [items[(3 * n + 5 * k) % 40] for k in range(12)] for n in range(5)}
    (tmp_path / "log.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t{t}\n" for u, seq in logs.items() for t, i in enumerate(seq)))
    store_cfg = tmp_path / "store.json"
    store_cfg.write_text(json.dumps({"type": "sqlite", "sqlite_path": str(tmp_path / "online.db"),
                                     "registry_path": str(tmp_path / "registry.db")}))
    with open_store(StoreConfig.from_file(store_cfg)) as store:
        store.write_users([UserState(u, codes=np.stack([table[1][i] for i in seq]), recent_items=seq[-4:],
                                     recent_times_ms=[1, 2, 3, 4], n_applied=12, codebook_id=old["codebook_id"])
                           for u, seq in logs.items()])
    done = _cli("migrate", "--root", str(tmp_path), "--log", str(tmp_path / "log.inter"), "--store-config",
                str(store_cfg))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["migrated"] == 5 and report["replayed"] == 5 and report["release"] == 2
    with open_store(StoreConfig.from_file(store_cfg)) as store:
        rows = store.read_users(list(logs))
    for u, seq in logs.items():  # replayed from the log: exactly the new release's item codes
        assert rows[u].codebook_id == new["codebook_id"]
        np.testing.assert_array_equal(rows[u].codes, np.stack([table[2][i] for i in seq]))
