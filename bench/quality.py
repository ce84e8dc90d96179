"""`hymirec bench quality`: popularity, our SASRec, HyMiRec + ablations and the peer libraries on real
datasets, one split, one evaluator, one budget rule; one JSON per run, results.json/.md and an R@K plot.

    hymirec bench quality --dataset all --peers all --seeds 0,1,2 --epochs 200 --time-budget 400
    hymirec bench quality --plan bench/plans/quality.toml     # per-dataset settings: bench/plan.py

Per dataset, in this order (each finished (method, seed) is written at once; a re-run with the same --out
skips what is on disk):
  1. export the leave-one-out split (OUT/<ds>/split, docs/peers.md)
  2. full run, first seed → popularity, SASRec (ours), HyMiRec; its item embeddings / codes are the
     dataset's diversity reference
  3. ablations (first seed)       4. every peer (first seed)
  5. other seeds (datasets with ≤ multi_seed_max_interactions): the full run (HyMiRec + our SASRec) and the
     strongest peer by first-seed NDCG@10
"""
from __future__ import annotations

import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from core.artifacts import RunLayout
from bench.datasets import BenchDataset
from bench.methods import (ABLATIONS, DIM, HYMIREC, MAX_LEN, OURS, POPULARITY, SASREC, TOPK,
                                    DiversityRef, Method, bench_config, budget_overrides, our_records, score_lists,
                                    stage2_only_overrides)
from bench.report import print_summary, write_report
from bench.results import ResultStore
from bench.peers.outputs import read_split
from bench.peers.runner import PEERS, Peer, PeerError, ensure_peer_env, parse_peers, run_peer


@dataclass
class BenchSettings:
    out: Path
    overrides: list[str] = field(default_factory=list)
    ablations: bool = True
    peers: list[Peer] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int = 200
    time_budget: float | None = 400.0
    multi_seed_max_interactions: int = 200_000
    seeded_ablations: list[str] = field(default_factory=list)  # ablation keys that also run every seed
    only_ablations: list[str] = field(default_factory=list)  # run just these ablation keys (empty = all of them)
    ledger: Path | None = None  # a copy of every finished record, kept across checkouts (results.py)

    def to_dict(self) -> dict:
        return {**asdict(self), "out": str(self.out), "ledger": str(self.ledger) if self.ledger else None,
                "peers": [p.name for p in self.peers], "dim": DIM,
                "max_len": MAX_LEN, "topk": TOPK}


def seeds_for(settings: BenchSettings, ds: BenchDataset) -> list[int]:
    """Every seed on the smaller datasets, the first one on the others."""
    return list(settings.seeds) if ds.interactions <= settings.multi_seed_max_interactions else list(settings.seeds[:1])


METHOD_ORDER = [m.key for m in OURS] + list(PEERS)
METHOD_LABELS = {**{m.key: m.label for m in OURS}, **{p.name: p.label for p in PEERS.values()}}


class QualityBench:
    """The orchestration; ``train_fn`` / ``peer_fn`` / ``env_fn`` are injectable (tests use fakes)."""

    def __init__(self, datasets: list[BenchDataset], settings: BenchSettings, log: Callable[[str], None] = print,
                 train_fn=None, peer_fn=None, env_fn=None, report_scope: tuple[list[BenchDataset], dict] | None = None,
                 report_only: bool = False):
        from training.train import run_training

        self.datasets, self.settings, self.log = datasets, settings, log
        # report_only: train nothing; what a real run would still train is listed in self.pending and the report
        self.report_only, self.pending = report_only, []
        # What report() covers: these datasets and settings (a plan runs one dataset at a time, reports them all)
        self.report_scope = report_scope or (datasets, settings.to_dict())
        self.store = ResultStore(settings.out, settings.ledger)
        self.train_fn = train_fn or run_training
        self.peer_fn = peer_fn or run_peer
        self.env_fn = env_fn or (lambda lib: ensure_peer_env(lib, log))
        self._envs: dict[str, object] = {}  # library → python path, or the PeerError that set-up raised

    # -- per dataset ---------------------------------------------------------------------------------
    def seeds_for(self, ds: BenchDataset) -> list[int]:
        return seeds_for(self.settings, ds)

    def run(self) -> dict:
        for i, ds in enumerate(self.datasets, 1):
            self.log(f"[bench] ===== dataset {i}/{len(self.datasets)}: {ds.key} =====")
            self.run_dataset(ds)
        return self.report()

    def run_dataset(self, ds: BenchDataset) -> None:
        from training.data import leave_one_out
        from bench.peers.split_export import export_split
        from training.train import load_run_data

        # Loaded once: the split export and every one of our runs (all seeds, all ablations) use this data.
        data = load_run_data(ds.spec)
        split_dir = self.settings.out / ds.key / "split"
        if not (split_dir / "manifest.json").is_file():
            export_split(data, leave_one_out(data), split_dir)
        split = read_split(split_dir)
        if split.n_items != data.n_items or split.n_users != len(data.sequences):
            raise ValueError(f"{split_dir} was exported from other data than {ds.spec}: remove it or use another --out")
        seeds = self.seeds_for(ds)
        first = seeds[0]
        self.run_ours(ds, None, first, data, split, None)
        ref = DiversityRef.from_run(self.run_dir(ds, None, first))
        if ref.embeddings is None and not self.report_only and self.work_left(ds, seeds):
            # Its records came from the ledger, its run directory did not: the peers' diversity and the
            # ablations' stage 1 need that run's item table, so it trains again (and its records are replaced).
            self.log(f"[bench] {ds.key}: the full seed-{first} run is in the ledger but not in {ref.source}; "
                     "training it again for the item table the runs still to do need")
            self.run_ours(ds, None, first, data, split, None, force=True)
            ref = DiversityRef.from_run(self.run_dir(ds, None, first))
        if ref.embeddings is None and not self.report_only:
            self.log(f"[bench] warning: {ref.source} has no item_embeddings.npy: diversity left empty")
        # Peers and seeds before the ablations: an interrupted bench then still has the comparison table.
        for peer in self.settings.peers:
            self.run_peer(ds, peer, first, split_dir, split, ref)
        # report-only: with a peer's first seed still missing, which peer is strongest is not known yet
        undecided = self.report_only and any(not self.store.has(ds.key, p.name, first) for p in self.settings.peers)
        strongest = None if undecided else self.strongest_peer(ds, first)
        if self.report_only and self.settings.peers and strongest is None and len(seeds) > 1:
            self.pending.append(f"{ds.key} / the strongest peer, seeds {seeds[1:]} (picked once every peer's "
                                f"seed {first} is on disk)")
        for seed in seeds[1:]:
            self.run_ours(ds, None, seed, data, split, ref)
            if strongest is not None:
                self.run_peer(ds, strongest, seed, split_dir, split, ref)
        chosen = self.settings.only_ablations
        for ablation in [a for a in ABLATIONS if not chosen or a.key in chosen] if self.settings.ablations else ():
            for seed in seeds if ablation.key in self.settings.seeded_ablations else seeds[:1]:
                self.run_ours(ds, ablation, seed, data, split, ref)

    def work_left(self, ds: BenchDataset, seeds: list[int]) -> bool:
        """Whether some peer, other seed or ablation of ``ds`` is still to run (strongest-peer seeds aside: they
        come with the first-seed peers)."""
        first, chosen = seeds[0], self.settings.only_ablations
        ablations = [a for a in ABLATIONS if not chosen or a.key in chosen] if self.settings.ablations else []
        return (any(not self.store.has(ds.key, p.name, first) for p in self.settings.peers)
                or any(not self.store.has(ds.key, HYMIREC.key, s) for s in seeds[1:])
                or any(not self.store.has(ds.key, a.key, s) for a in ablations
                       for s in (seeds if a.key in self.settings.seeded_ablations else seeds[:1])))

    def strongest_peer(self, ds: BenchDataset, seed: int) -> Peer | None:
        scored = [(rec["metrics"]["NDCG@10"], peer) for peer in self.settings.peers
                  if (rec := self.store.get(ds.key, peer.name, seed)) is not None]
        if not scored:
            return None
        best = max(scored, key=lambda t: t[0])[1]
        # Only this invocation's --peers compete: the ledger's table ranks every peer on disk.
        self.log(f"[bench] {ds.key}: strongest of this run's {len(scored)} peer(s) by seed-{seed} NDCG@10: "
                 f"{best.label}")
        return best

    # -- our methods ---------------------------------------------------------------------------------
    def run_dir(self, ds: BenchDataset, ablation: Method | None, seed: int) -> Path:
        return self.settings.out / ds.key / "runs" / f"{ablation.key if ablation else 'full'}-seed{seed}"

    def run_ours(self, ds: BenchDataset, ablation: Method | None, seed: int, data, split,
                 ref: DiversityRef | None, force: bool = False) -> None:
        first = seed == self.seeds_for(ds)[0]
        methods = [ablation] if ablation else ([POPULARITY] if first else []) + [SASREC, HYMIREC]
        todo = methods if force else [m for m in methods if not self.done(ds, m.key, seed, ours=True)]
        if not todo:
            self.log(f"[bench] {ds.key} / {', '.join(m.label for m in methods)} seed {seed}: on disk, skipped")
            return
        if self.report_only:
            self.pending += [f"{ds.key} / {m.label} seed {seed}" for m in todo]
            return
        run_dir = self.run_dir(ds, ablation, seed)
        # Ablations reuse the full run's stage-1 item embeddings: the same items, so only stage 2 differs.
        stage1 = str(self.run_dir(ds, None, seed))
        if ablation and not RunLayout.at(stage1).item_embeddings.is_file():  # its record is in the ledger only
            self.log(f"[bench] {ds.key} / {ablation.label} seed {seed}: {stage1} is not on disk; training the "
                     "full run it starts from again")
            self.run_ours(ds, None, seed, data, split, ref if not first else None, force=True)
        extra = list(ablation.overrides) + stage2_only_overrides(stage1) if ablation else []
        cfg = bench_config(ds.spec, run_dir, budget_overrides(self.settings.epochs, self.settings.time_budget)
                           + self.settings.overrides + extra + [f"train.seed={seed}"])
        self.log(f"[bench] {ds.key} / {', '.join(m.label for m in todo)} seed {seed}: training → {run_dir}")
        try:
            metrics = self.train_fn(cfg, progress=True, log=self.log, data=data)
            ref = ref if ref is not None else DiversityRef.from_run(run_dir)  # the full first-seed run: its own
            for record in our_records(run_dir, metrics, todo, split, ref):
                self.save({**record, "dataset": ds.key, "seed": seed, "budget": self.budget(),
                           "overrides": list(self.settings.overrides)})
        except Exception as exc:  # noqa: BLE001 — record, report, go on with the next method
            self.fail(ds, todo, seed, exc)

    # -- peers ---------------------------------------------------------------------------------------
    def peer_python(self, library: str):
        if library not in self._envs:
            try:
                self._envs[library] = self.env_fn(library)
            except PeerError as exc:
                self._envs[library] = exc
        env = self._envs[library]
        if isinstance(env, Exception):
            raise env
        return env

    def run_peer(self, ds: BenchDataset, peer: Peer, seed: int, split_dir: Path, split, ref) -> None:
        if self.done(ds, peer.name, seed):
            self.log(f"[bench] {ds.key} / {peer.label} seed {seed}: on disk, skipped")
            return
        if self.report_only:
            self.pending.append(f"{ds.key} / {peer.label} seed {seed}")
            return
        out_dir = self.settings.out / ds.key / "peers" / f"{peer.name}-seed{seed}"
        self.log(f"[bench] {ds.key} / {peer.label} seed {seed}: running → {out_dir}")
        try:
            python = self.peer_python(peer.library)
            run = self.peer_fn(peer, split_dir, out_dir, epochs=self.settings.epochs,
                               time_budget=self.settings.time_budget, seed=seed, dim=DIM, max_len=MAX_LEN,
                               topk=TOPK, python=python, split=split, log=self.log)
            result = run.result
            n_users = max(1, int(result["n_test_users"]))
            record = {"dataset": ds.key, "method": peer.name, "label": peer.label, "kind": "peer",
                      "library": peer.library, "seed": seed, "source": str(out_dir), "budget": self.budget(),
                      "train_seconds": float(result["train_seconds"]), "epochs_run": result.get("epochs_run"),
                      "infer_ms_per_user": 1000 * float(result["infer_seconds"]) / n_users,
                      "wall_seconds": run.wall_seconds, "peer_result": result,
                      **score_lists(run.topk, split, ref, run.protocol_violations, run.duplicate_items)}
            self.save(record)
        except Exception as exc:  # noqa: BLE001
            self.fail(ds, [Method(peer.name, peer.label, "peer")], seed, exc)

    # -- bookkeeping ---------------------------------------------------------------------------------
    def done(self, ds: BenchDataset, method: str, seed: int, ours: bool = False) -> bool:
        """On disk *under this budget* (and, for our methods, these config overrides): a record measured under
        other settings is re-run and replaced, so a table never mixes settings within a dataset unsaid."""
        record = self.store.get(ds.key, method, seed)
        if record is None:
            return False
        stale = {"budget": (record.get("budget"), self.budget())}
        if ours:  # records written before overrides were recorded ran without any
            stale["overrides"] = (record.get("overrides", []), list(self.settings.overrides))
        for what, (on_disk, wanted) in stale.items():
            if on_disk != wanted:
                self.log(f"[bench] {ds.key} / {method} seed {seed}: on disk under other {what} "
                         f"({on_disk} ≠ {wanted}): it runs again")
                return False
        return True

    def budget(self) -> dict:
        return {"epochs": self.settings.epochs, "time_budget_s": self.settings.time_budget, "dim": DIM,
                "max_len": MAX_LEN}

    def save(self, record: dict) -> None:
        # when: a ledger's records come from several machines and sessions (the table's legend gives the range)
        record = {**record, "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        path = self.store.write(record)
        m = record["metrics"]
        self.log(f"[bench] {record['dataset']} / {record['label']} seed {record['seed']}: "
                 f"R@10 {m['Recall@10']:.4f} N@10 {m['NDCG@10']:.4f} R@50 {m['Recall@50']:.4f} "
                 f"train {record['train_seconds']:.0f}s → {path}")
        self.report()

    def fail(self, ds: BenchDataset, methods: list[Method], seed: int, exc: Exception) -> None:
        summary = f"{type(exc).__name__}: {exc}"
        error = summary + "\n\n" + "".join(traceback.format_exception(exc))
        summary = summary.splitlines()[0]
        for m in methods:
            self.store.write_failure(ds.key, m.key, seed, m.label, error)
            self.log(f"[bench] {ds.key} / {m.label} seed {seed} FAILED: {summary}")
        self.report()

    def report(self) -> dict:
        datasets, settings = self.report_scope
        keys = [d.key for d in datasets]
        # today's labels (a resumed record keeps the label it was written with)
        records = [{**r, "label": METHOD_LABELS.get(r["method"], r.get("label", r["method"]))}
                   for r in self.store.records(keys)]
        return write_report(self.settings.out, records, self.store.failures(keys), datasets, settings, METHOD_ORDER,
                            pending=self.pending if self.report_only else None)


def run_bench(datasets: list[BenchDataset], settings: BenchSettings, log: Callable[[str], None] = print,
              **fakes) -> dict:
    """Run (or resume) the whole bench; returns the results.json payload."""
    settings.out.mkdir(parents=True, exist_ok=True)
    return QualityBench(datasets, settings, log, **fakes).run()


def parse_seeds(text: str) -> list[int]:
    seeds = list(dict.fromkeys(int(s) for s in str(text).split(",") if s.strip()))
    if not seeds:
        raise ValueError(f"--seeds {text!r}: give at least one seed, e.g. 0,1,2")
    return seeds


def make_settings(out: str | Path, overrides: list[str] | None = None, ablations: bool = True, peers: str = "all",
                  seeds: str | list[int] = "0,1,2", epochs: int = 200, time_budget: float | None = 400.0,
                  multi_seed_max_interactions: int = 200_000, seeded_ablations: str | list[str] = "",
                  only_ablations: str | list[str] = "", ledger: str | Path | None = None) -> BenchSettings:
    """Checked settings: a bad peer, seed, ablation key, epoch count or config override fails here, not after hours."""
    def keys(value) -> list[str]:
        return [k.strip() for k in (value.split(",") if isinstance(value, str) else value) if str(k).strip()]

    settings = BenchSettings(out=Path(out), overrides=list(overrides or []), ablations=bool(ablations),
                             peers=parse_peers(peers),
                             seeds=parse_seeds(seeds if isinstance(seeds, str) else ",".join(map(str, seeds))),
                             epochs=int(epochs), time_budget=float(time_budget) if time_budget else None,
                             multi_seed_max_interactions=int(multi_seed_max_interactions),
                             seeded_ablations=keys(seeded_ablations), only_ablations=keys(only_ablations),
                             ledger=Path(ledger) if ledger and ledger != "none" else None)  # --ledger none
    for flag, chosen in (("--seeded-ablations", settings.seeded_ablations),
                         ("--only-ablations", settings.only_ablations)):
        unknown = set(chosen) - {m.key for m in ABLATIONS}
        if unknown:
            raise ValueError(f"{flag}: unknown {sorted(unknown)}; known: {[m.key for m in ABLATIONS]}")
    if settings.epochs < 1:
        raise ValueError("--epochs must be ≥ 1")
    bench_config("synthetic", settings.out, settings.overrides)  # a bad --set fails now, not after hours
    return settings


def bench_quality(datasets: list[str] | None, out: str, data_dir: str | None = None, overrides: list[str] | None = None,
                  ablations: bool = True, peers: str = "all", seeds: str = "0,1,2", epochs: int = 200,
                  time_budget: float | None = 400.0, multi_seed_max_interactions: int = 200_000,
                  seeded_ablations: str = "", only_ablations: str = "", ledger: str | None = None,
                  log: Callable[[str], None] = print) -> int:
    """The command: check every argument and dataset first (nothing trains before), run, print the table.
    Exit code 1 when some method failed (its error is in the table's legend and in results.json)."""
    from bench.datasets import resolve_datasets

    settings = make_settings(out, overrides, ablations, peers, seeds, epochs, time_budget,
                             multi_seed_max_interactions, seeded_ablations, only_ablations, ledger)
    resolved = resolve_datasets(datasets, Path(data_dir) if data_dir else None, log)
    payload = run_bench(resolved, settings, log)
    print_summary(payload, settings.out)
    return 1 if payload["failures"] else 0
