"""The bench's orchestration with fake trainers/runners: what runs, seeds, the budget rule, resume, failures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from peer_support import write_tiny_dataset

from core.artifacts import RunLayout
from bench.datasets import UnsupportedDatasetError, resolve_datasets
from bench.quality import BenchSettings, bench_quality, parse_seeds, run_bench
from training.evaluate import popularity_topk
from bench.peers.runner import PEERS, PeerError, PeerRun


def _target_first(lists, targets, every):
    out = lists.copy()
    for u in range(0, len(out), every):
        rest = [i for i in lists[u] if i != targets[u]]
        out[u] = [targets[u]] + rest[: out.shape[1] - 1]
    return out


class Fakes:
    """run_training / run_peer stand-ins writing what the real ones write (lists, embeddings, codes)."""

    def __init__(self, failing_peer: str | None = None):
        self.train_calls, self.peer_calls, self.failing_peer = [], [], failing_peer

    def train(self, cfg, progress=True, log=print, data=None):
        from training.data import leave_one_out

        self.train_calls.append(cfg)
        split = leave_one_out(data)
        layout = RunLayout.at(cfg.run_dir).ensure()
        pop = popularity_topk(split.train, data.n_items, split.test.histories, 100)
        np.save(layout.test_users, split.test.users)
        np.save(layout.topk_test_popularity, pop)
        np.save(layout.topk_test_sasrec, _target_first(pop, split.test.targets, 4 + cfg.train.seed))
        np.save(layout.topk_test_hymirec, _target_first(pop, split.test.targets, 2 + cfg.train.seed))
        rng = np.random.default_rng(cfg.train.seed)
        np.save(layout.item_embeddings, rng.normal(size=(data.n_items + 1, 8)).astype(np.float32))
        np.save(layout.item_codes, rng.integers(0, 4, size=(data.n_items + 1, 2)).astype(np.uint16))
        return {"popularity": {"inference_ms_per_user": 0.01},
                "sasrec": {"train_seconds": 3.0, "epochs": 2, "inference_ms_per_user": 0.5, "valid_best_ndcg10": 0.1},
                "hymirec": {"train_seconds": 10.0 + cfg.train.seed, "epochs": 3, "inference_ms_per_user": 1.0,
                            "valid_best_ndcg10": 0.2},
                "stage1_seconds": 1.0, "codebook": {"fit_seconds": 0.5},
                "item_representation": {"kind": "item_id_embedding"}}

    def peer(self, peer, split_dir, out_dir, *, epochs, time_budget, seed, dim, max_len, topk, python, split, log):
        self.peer_calls.append((peer.name, seed, epochs, time_budget, dim, max_len, topk))
        if peer.name == self.failing_peer:
            raise PeerError(f"{peer.name}: runner failed (exit 1)\nModuleNotFoundError: no module named x")
        counts = np.bincount(np.concatenate(split.histories), minlength=split.n_items + 1)
        order = [i for i in np.argsort(-counts, kind="stable") if i != 0]
        lists = np.array([[i for i in order if i not in h][:topk] + [0] * 0 for h in split.histories])
        if peer.name == "recbole-sasrec":  # the strongest peer: target first for every user
            lists = _target_first(lists, split.targets, 1)
        result = {"library": peer.library, "version": "0", "model": peer.model, "epochs_run": 1,
                  "train_seconds": 5.0, "infer_seconds": 0.2, "n_test_users": len(split.targets)}
        return PeerRun(peer, result, lists, 2 if peer.name == "rectools-sasrec" else 0, 0, 1.0, Path(out_dir))


@pytest.fixture()
def bench_env(tmp_path):
    write_tiny_dataset(tmp_path / "data" / "tiny", n_users=60, n_items=150)
    datasets = resolve_datasets(["tiny"], tmp_path / "data", log=lambda *_: None)
    settings = BenchSettings(out=tmp_path / "out", peers=[PEERS["rectools-sasrec"], PEERS["recbole-sasrec"]],
                             seeds=[0, 1], epochs=3, time_budget=120.0)
    return datasets, settings


def _run(datasets, settings, fakes):
    return run_bench(datasets, settings, log=lambda *_: None, train_fn=fakes.train, peer_fn=fakes.peer,
                     env_fn=lambda lib: f"/venv/{lib}/bin/python")


def test_full_bench_runs_everything_once_then_resumes(bench_env):
    datasets, settings = bench_env
    fakes = Fakes()
    payload = _run(datasets, settings, fakes)

    runs = [(Path(c.run_dir).name, c.train.seed) for c in fakes.train_calls]
    # seeds before ablations, so an interrupted bench still has the comparison rows
    assert runs == [("full-seed0", 0), ("full-seed1", 1), ("hymirec-long200-seed0", 0),
                    ("hymirec-no-codebook-seed0", 0), ("hymirec-no-lightweight-seed0", 0), ("hymirec-k3-seed0", 0),
                    ("hymirec-paper-seed0", 0), ("hymirec-no-llm-seed0", 0), ("hymirec-ids-from-scratch-seed0", 0),
                    ("hymirec-multi-seed0", 0)]
    by_run = {Path(c.run_dir).name: c for c in fakes.train_calls}
    for cfg in fakes.train_calls:  # the one budget rule, passed to our trainers
        assert (cfg.train.epochs, cfg.train.sasrec_epochs, cfg.train.max_train_seconds) == (3, 3, 120.0)
        # the two variants outside the rule
        long_len = {"hymirec-long200-seed0": 200, "hymirec-multi-seed0": 1024}.get(Path(cfg.run_dir).name, 50)
        assert (cfg.hybrid.out_dim, cfg.item_encoder.id_embedding_dim, cfg.hybrid.long_len) == (64, 64, long_len)
    assert by_run["hymirec-no-llm-seed0"].hybrid.use_llm is False and by_run["full-seed0"].hybrid.use_llm is True
    assert by_run["hymirec-no-codebook-seed0"].hybrid.use_codebook is False
    assert by_run["full-seed0"].hybrid.id_init == "sasrec" and by_run["hymirec-ids-from-scratch-seed0"].hybrid.id_init == "zeros"
    assert by_run["hymirec-no-lightweight-seed0"].hybrid.use_lightweight is False
    assert by_run["full-seed0"].hybrid.n_interests == 1 and by_run["hymirec-k3-seed0"].hybrid.n_interests == 3
    paper = by_run["hymirec-paper-seed0"].hybrid  # the DMIL-only training the bench preset replaced
    assert (paper.n_interests, paper.next_item_weight, paper.n_negatives, paper.anchor_last_item) == (3, 0.0, 2048, False)
    multi = by_run["hymirec-multi-seed0"].hybrid  # each interest its own query output, DMIL clustering on
    assert (multi.n_interests, multi.window, multi.anchor_last_item, multi.long_window) == (3, 10, False, "older")
    assert not by_run["hymirec-k3-seed0"].train_sasrec and by_run["full-seed0"].train_sasrec
    # ablations differ from the full run only in stage 2: they reuse its stage-1 item embeddings
    assert by_run["hymirec-k3-seed0"].stage1_from == by_run["full-seed0"].run_dir
    assert by_run["full-seed0"].stage1_from is None and by_run["full-seed1"].stage1_from is None
    # peers: each once with seed 0, and the strongest (by seed-0 NDCG@10) again with seed 1
    assert [(c[0], c[1]) for c in fakes.peer_calls] == [("rectools-sasrec", 0), ("recbole-sasrec", 0),
                                                        ("recbole-sasrec", 1)]
    assert fakes.peer_calls[0][2:] == (3, 120.0, 64, 50, 100)

    out = settings.out
    files = sorted(p.name for p in (out / "tiny" / "results").glob("*.json"))
    assert len(files) == 16 and "popularity-seed0.json" in files and "popularity-seed1.json" not in files
    rows = {r["method"]: r for r in payload["rows"]}
    assert rows["hymirec"]["n_seeds"] == 2 and rows["hymirec"]["std"]["Recall@10"] > 0
    assert rows["hymirec"]["mean"]["train_seconds"] == pytest.approx(np.mean([10 + 1 + 0.5 + 3, 11 + 1 + 0.5 + 3]))
    assert rows["recbole-sasrec"]["mean"]["Recall@10"] == 1.0 and rows["recbole-sasrec"]["n_seeds"] == 2
    assert rows["rectools-sasrec"]["protocol_violations"] == 2 and rows["hymirec-k3"]["n_seeds"] == 1
    assert rows["popularity"]["mean"]["ILD@50"] > 0 and rows["popularity"]["mean"]["clusters@50"] >= 1
    md = (out / "results.md").read_text()
    assert "| tiny † | HyMiRec (full) | " in md and " ± " in md and "HyMiRec: no LLM recommender" in md
    assert "⚠ 2 history items dropped" in md and "≤ 3 epochs and ≤ 120 s" in md
    assert "item-id embedding in place of the content encoder" in md and "published" not in md
    assert (out / "recall_at_k.png").stat().st_size > 0
    assert json.loads((out / "results.json").read_text())["settings"]["seeds"] == [0, 1]

    again = Fakes()  # resume: everything is on disk
    _run(datasets, settings, again)
    assert again.train_calls == [] and again.peer_calls == []

    (out / "tiny" / "results" / "hymirec-no-llm-seed0.json").unlink()
    (out / "tiny" / "results" / "recbole-sasrec-seed1.json").unlink()
    partial = Fakes()
    _run(datasets, settings, partial)
    assert [Path(c.run_dir).name for c in partial.train_calls] == ["hymirec-no-llm-seed0"]
    assert [(c[0], c[1]) for c in partial.peer_calls] == [("recbole-sasrec", 1)]


def test_failed_peer_is_recorded_and_retried(bench_env):
    datasets, settings = bench_env
    settings.ablations, settings.seeds = False, [0]
    payload = _run(datasets, settings, Fakes(failing_peer="rectools-sasrec"))
    assert [f["method"] for f in payload["failures"]] == ["rectools-sasrec"]
    assert "**Failed:** tiny / SASRec (RecTools) (seed 0): PeerError: rectools-sasrec: runner failed" in \
        (settings.out / "results.md").read_text()
    retry = Fakes()
    payload = _run(datasets, settings, retry)
    assert [(c[0], c[1]) for c in retry.peer_calls] == [("rectools-sasrec", 0)] and payload["failures"] == []


def test_large_datasets_run_one_seed(bench_env):
    datasets, settings = bench_env
    settings.ablations, settings.multi_seed_max_interactions = False, 10
    fakes = Fakes()
    _run(datasets, settings, fakes)
    assert [c.train.seed for c in fakes.train_calls] == [0] and [c[1] for c in fakes.peer_calls] == [0, 0]


def test_bad_arguments_fail_before_anything_runs(tmp_path):
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "x.parquet").write_text("")
    with pytest.raises(UnsupportedDatasetError, match="cannot be read"):
        bench_quality([str(tmp_path / "odd")], str(tmp_path / "out"), peers="none", log=lambda *_: None)
    with pytest.raises(ValueError, match="unknown peer"):
        bench_quality(["synthetic"], str(tmp_path / "out"), peers="nope", log=lambda *_: None)
    with pytest.raises(ValueError, match="unknown field"):
        bench_quality(["synthetic"], str(tmp_path / "out"), overrides=["train.nope=1"], peers="none")
    assert not (tmp_path / "out").exists()
    assert parse_seeds("0, 1,2,1") == [0, 1, 2]
    with pytest.raises(ValueError, match="at least one seed"):
        parse_seeds(",")


def test_seeded_ablations_run_every_seed_and_reuse_that_seeds_stage1(bench_env):
    datasets, settings = bench_env
    settings.seeded_ablations = ["hymirec-k3"]
    fakes = Fakes()
    payload = _run(datasets, settings, fakes)
    by_run = {Path(c.run_dir).name: c for c in fakes.train_calls}
    assert by_run["hymirec-k3-seed1"].train.seed == 1
    assert by_run["hymirec-k3-seed1"].stage1_from == by_run["full-seed1"].run_dir
    assert "hymirec-no-llm-seed1" not in by_run  # not asked for: one seed
    rows = {r["method"]: r for r in payload["rows"]}
    assert rows["hymirec-k3"]["n_seeds"] == 2 and rows["hymirec-no-llm"]["n_seeds"] == 1
    assert "and so did the ablation(s) hymirec-k3" in (settings.out / "results.md").read_text()


def test_unknown_seeded_ablation_is_refused(tmp_path):
    from bench.quality import bench_quality

    with pytest.raises(ValueError, match="--seeded-ablations: unknown"):
        bench_quality(["synthetic"], str(tmp_path), seeded_ablations="hymirec-k9", peers="none")
    with pytest.raises(ValueError, match="--only-ablations: unknown"):
        bench_quality(["synthetic"], str(tmp_path), only_ablations="hymirec-k9", peers="none")


def test_only_ablations_runs_just_those(bench_env):
    datasets, settings = bench_env
    settings.only_ablations = ["hymirec-no-llm", "hymirec-k3"]
    fakes = Fakes()
    _run(datasets, settings, fakes)
    runs = [Path(c.run_dir).name for c in fakes.train_calls]
    assert runs == ["full-seed0", "full-seed1", "hymirec-k3-seed0", "hymirec-no-llm-seed0"]  # in ABLATIONS order


def test_hymirec_train_time_counts_the_sasrec_its_ids_start_from():
    from bench.methods import _hymirec_train_seconds

    base = {"hymirec": {"train_seconds": 100.0}, "stage1_seconds": 20.0, "codebook": {"fit_seconds": 1.0},
            "sasrec": {"train_seconds": 50.0}, "item_representation": {"kind": "content_encoder"}}
    assert _hymirec_train_seconds({**base, "config": {"hybrid": {"id_init": "zeros"}}}) == 121.0
    assert _hymirec_train_seconds({**base, "config": {"hybrid": {"id_init": "sasrec"}}}) == 171.0


def test_a_fresh_checkout_resumes_from_the_ledger(bench_env, tmp_path):
    datasets, settings = bench_env
    settings.ledger, settings.only_ablations = tmp_path / "ledger", ["hymirec-no-llm", "hymirec-k3"]
    _run(datasets, settings, Fakes())
    ledger_files = sorted(p.name for p in (tmp_path / "ledger" / "tiny").glob("*.json"))
    assert len(ledger_files) == 10 and "hymirec-k3-seed0.json" in ledger_files

    settings.out = tmp_path / "fresh-out"  # a new checkout: the ledger only
    again = Fakes()
    payload = _run(datasets, settings, again)
    assert again.train_calls == [] and again.peer_calls == []
    assert {r["method"] for r in payload["rows"]} >= {"hymirec", "hymirec-k3", "recbole-sasrec"}

    # one ablation still to run: it starts from the full run's stage 1, which this checkout does not have,
    # so the full run trains again first (its records replaced), then the ablation
    (tmp_path / "ledger" / "tiny" / "hymirec-k3-seed0.json").unlink()
    partial = Fakes()
    _run(datasets, settings, partial)
    assert [Path(c.run_dir).name for c in partial.train_calls] == ["full-seed0", "hymirec-k3-seed0"]
    assert partial.peer_calls == []
    assert (tmp_path / "ledger" / "tiny" / "hymirec-k3-seed0.json").is_file()
