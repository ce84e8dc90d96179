"""Do HyMiRec's own mechanisms earn their place? Several interests, the long coded history, codes vs exact
embeddings, measured on one dataset under both protocols, in one run of variants that differ in one setting each.

    python -m bench.mechanisms prepare --dataset ../shared/data/ml-1m --out runs/mech      # stage 1 (CPU is fine)
    python -m bench.mechanisms run     --dataset ../shared/data/ml-1m --out runs/mech [--budget S]
    python -m bench.mechanisms diagnose --out runs/mech       # each interest alone and their mean, per K = 3 run
    python -m bench.mechanisms report  --out runs/mech --record bench/records/mechanisms-ml-1m.json
    (--suite llm: the LLM backbone instead: SmolLM2's first 4 layers pretrained vs random vs the default Qwen2)

``prepare`` trains stage 1 (the content encoder on item text, via training.train's named steps) once per protocol,
since each protocol's training split differs. ``run`` then trains, per protocol, a base run (our SASRec + HyMiRec
K = 1) on that stage 1, and every variant as stage 2 alone on the base run (its stage 1 and SASRec item table), in
parallel processes. ``report`` turns the runs' metrics.json into a record for the results page (bench/records/),
with the acceptance comparisons of issue 25 computed from the same numbers.

Every variant sits on the quality bench's preset (bench/methods.py: BENCH_PRESET, dim 64, SASRec ids) with the
long history of the paper (1,024 items older than the recent 50, from codebook codes), one patience rule (10) for
every model, no wall-clock cap unless --budget is given (then the same cap for every model: say so when reporting).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.mechanism_variants import BASE, LONG, MULTI_CANDIDATES, ONE_RULE, SUITES, VARIANTS
from bench.methods import BENCH_PRESET
from bench.peers.converged import PEER_EPOCH_CAP, PEER_PATIENCE, run_peer_converged  # noqa: F401 (report, CLI)
from training.resume import PAUSED_EXIT, RESUME_DIR



def base_overrides(protocol: str, budget: float | None) -> list[str]:
    return (list(BENCH_PRESET) + ONE_RULE + LONG + [f"train.protocol={protocol}"]
            + ([f"train.max_train_seconds={budget}"] if budget else []))


def run_config(dataset: str, run_dir: Path, protocol: str, variant: str, budget: float | None, extra=()):
    from training.config import RunConfig

    cfg = RunConfig(dataset=str(Path(dataset).resolve()), run_dir=str(run_dir))
    return cfg.override(base_overrides(protocol, budget) + VARIANTS[variant] + list(extra))


def prepare(dataset: str, out: Path, smoke: bool = False, suite: str = "mechanisms",
            only: list[str] | None = None, seed: int = 0) -> None:
    """Stage 1 per protocol into OUT/stage1-<protocol>: item_embeddings.npy + the config/metrics reuse checks. A
    dataset without item text has no stage 1 to share: each base run's own SASRec item table is its stage 1 (as in
    training.train.train_stage1), and the folder says so (config and metrics, no embeddings)."""
    from core.artifacts import RunLayout, write_json_atomic
    from training.train import start_run, train_stage1

    for protocol in [p for p in SUITES[suite] if not only or p in only]:
        layout = RunLayout.at(out / f"stage1-{protocol}")
        extra = (["item_encoder.finetune_steps=2"] if smoke else []) + seed_overrides(seed)
        state = start_run(run_config(dataset, layout.root, protocol, BASE[protocol], None, extra))
        if not state.data.has_text:
            layout.item_embeddings.unlink(missing_ok=True)
            write_json_atomic(layout.config, state.config.to_dict())
            write_json_atomic(layout.metrics, {"item_representation": NO_TEXT_STAGE1})
            print(f"[mechanisms] {state.data.name} has no item text: the base run's SASRec gives stage 1", flush=True)
            continue
        train_stage1(state)
        import numpy as np

        np.save(layout.item_embeddings, state.item_emb)
        write_json_atomic(layout.config, state.config.to_dict())
        write_json_atomic(layout.metrics, {"item_representation": state.metrics["item_representation"]})
        print(f"[mechanisms] stage 1 ({protocol}) → {layout.root}", flush=True)


def seed_overrides(seed: int) -> list[str]:
    """Another training seed for a whole OUT (stage 1, SASRec, every stage 2): a replicate of the same comparison
    on the same users (the --max-users cut stays seed 0's). Seed 0 adds nothing, so earlier runs' configs match."""
    return [f"train.seed={seed}"] if seed else []


def trained_seed(out: Path) -> int:
    """The training seed OUT's base runs were made with (their config.json), which a replicate's record names."""
    configs = [out / protocol / variant / "config.json" for protocol, variant in BASE.items()]
    seeds = {json.loads(path.read_text())["train"]["seed"] for path in configs if path.is_file()}
    if len(seeds) > 1:
        raise SystemExit(f"the base runs in {out} were trained with different seeds {sorted(seeds)}")
    return seeds.pop() if seeds else 0


NO_TEXT_STAGE1 = {"kind": "item_id_embedding", "note": "no item text: the base run's own SASRec item table"}


def base_stage1(stage1: Path) -> Path | None:
    """What a base run reuses as stage 1: the prepared folder, or None where the dataset has no item text (the run
    then takes its own SASRec's item table)."""
    if (stage1 / "item_embeddings.npy").is_file():
        return stage1
    if (stage1 / "metrics.json").is_file() and \
            json.loads((stage1 / "metrics.json").read_text()).get("item_representation") == NO_TEXT_STAGE1:
        return None
    raise SystemExit(f"no stage 1 in {stage1}: run `python -m bench.mechanisms prepare` with the same --out first")


def subsample_users(dataset: str, out: Path, n_users: int, seed: int = 0) -> str:
    """A dataset folder cut to ``n_users`` random users (every interaction of each kept): the CPU-sized version of a
    large set, with its histories intact. The folder is RecBole atomic (<name>.inter) or UniSRec's layout
    (<name>.{train,valid,test}.inter, one row per user and split: each file is cut to the same users). Written to
    OUT/data/<name>-u<N>/ with the item file(s); returns that path."""
    import numpy as np

    src = Path(dataset)
    inters = sorted(src.glob("*.inter")) if src.is_dir() else []
    if not inters:
        raise ValueError(f"--max-users needs a folder of <name>.inter files (RecBole or UniSRec layout), got {dataset}")
    tables = {path: path.read_text().splitlines() for path in inters}
    users = sorted({line.split("\t", 1)[0] for lines in tables.values() for line in lines[1:]})
    keep = set(np.random.default_rng(seed).choice(users, size=min(n_users, len(users)), replace=False).tolist())
    dst = out / "data" / f"{src.name}-u{n_users}"
    dst.mkdir(parents=True, exist_ok=True)
    for path, lines in tables.items():
        (dst / path.name).write_text("\n".join([lines[0]] + [line for line in lines[1:]
                                                             if line.split("\t", 1)[0] in keep]) + "\n")
    for item_file in src.glob("*.item"):
        (dst / item_file.name).write_bytes(item_file.read_bytes())
    print(f"[mechanisms] {len(keep)} of {len(users)} users of {src} → {dst}", flush=True)
    return str(dst)


def user_cut(step: str, dataset: str, out: Path, n_users: int, base_from: Path | None = None) -> str:
    """The --max-users dataset a step works on: `prepare` writes it into OUT/data/, later steps read it there.
    `run --base-from B` reads B's cut: its stage 1 was made on it, and a run refuses a stage 1 of another dataset.
    `peer` on an OUT without a cut writes it, as `prepare` would (the same seed keeps the same users), so a peer
    library can run on a record's split where the record's own runs are not on this machine."""
    if step == "prepare":
        return subsample_users(dataset, out, n_users)
    home = base_from if step == "run" and base_from is not None else out
    cut = home / "data" / f"{Path(dataset).name}-u{n_users}"
    if step == "peer" and not cut.is_dir():
        return subsample_users(dataset, out, n_users)
    if not cut.is_dir():
        raise SystemExit(f"no {n_users}-user cut of {dataset} at {cut}: run `prepare --max-users {n_users}` first")
    return str(cut)


def _point_stage1_at(stage1: Path, dataset: str) -> None:
    """A carried stage-1 folder names the dataset where it was made; name this machine's path (same files)."""
    path = stage1 / "config.json"
    config = json.loads(path.read_text())
    config["dataset"] = str(Path(dataset).resolve())
    path.write_text(json.dumps(config, indent=2, sort_keys=True))


def resumable_done(run_dir: Path, pause_after: float | None) -> bool:
    """A run that an earlier call of a pausing `run` (``pause_after``) finished: the same command resumes the others
    and keeps it (without ``pause_after``, a call trains every run afresh, as before)."""
    if pause_after is None or not (run_dir / "metrics.json").is_file() or (run_dir / RESUME_DIR).is_dir():
        return False
    print(f"[mechanisms] {run_dir}: finished by an earlier call, kept", flush=True)
    return True


def _launch(dataset: str, out: Path, protocol: str, variant: str, stage1_from: Path | None, train_sasrec: bool,
            budget: float | None, extra: list[str]) -> tuple[str, subprocess.Popen]:
    run_dir = out / protocol / variant
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = run_config(dataset, run_dir, protocol, variant, budget,
                     extra + ([f"stage1_from={stage1_from}"] if stage1_from else [])
                     + [f"train_sasrec={'true' if train_sasrec else 'false'}"])
    (run_dir / "run_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    log = open(run_dir / "train.log", "a" if (run_dir / RESUME_DIR).is_dir() else "w")  # a paused run: resumed
    cmd = [sys.executable, "-m", "hymirec.cli", "train", "--quiet", "--config", str(run_dir / "run_config.json"),
           "--dataset", cfg.dataset, "--run-dir", str(run_dir)]
    return f"{protocol}/{variant}", subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def _wait(procs: list[tuple[str, subprocess.Popen]]) -> dict[str, int]:
    codes = {}
    for name, proc in procs:
        codes[name] = proc.wait()
        print(f"[mechanisms] {name}: exit {codes[name]}", flush=True)
    return codes


def run(dataset: str, out: Path, budget: float | None, smoke: bool = False, only: list[str] | None = None,
        suite: str = "mechanisms", epochs: int | None = None, long_len: int | None = None,
        variants: list[str] | None = None, base_from: Path | None = None,
        sasrec_from: Path | None = None, patience: int | None = None, pause_after: float | None = None,
        sasrec_layout: dict | None = None, seed: int = 0) -> dict:
    """Base runs (our SASRec + the base variant) for both protocols at once, then every other variant at once.
    With ``variants``: only those, on base runs already in OUT (a variant added to a finished run). With
    ``base_from``: every variant of the plan, the base variant too, as stage 2 alone on that OUT's finished base
    runs (their stage 1 and SASRec), all at once: the same comparison under another epoch cap, say. With
    ``sasrec_from``: our SASRec with the settings that sweep (bench/sasrec_sweep.py) chose on validation, and the
    patience it chose them under (``sasrec_layout``: chosen among that layout's points only, for HyMiRec's
    warm-start candidates, bench/converged_view.hymirec_choice); where the sweep kept that point's trained model,
    every leave-one-out run loads it (train.sasrec_weights) and its variants start beside the base run, not after
    it, with or without a base run in OUT. ``patience``: every model's (ONE_RULE's 10
    otherwise). ``pause_after``: each training run pauses at its first epoch end past that many seconds (exit 75,
    training/resume.py) and the same call resumes it: a converged run on a slow dataset spans CPU sessions; the
    variants start once the base runs have finished."""
    plan = SUITES[suite]
    if variants:
        unknown = sorted(set(variants) - set(VARIANTS))
        if unknown:
            raise SystemExit(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
        plan = {p: [v for v in variants if base_from is not None or v != BASE[p]] for p in plan}
    extra = ["train.epochs=1", "train.sasrec_epochs=1", "train.max_eval_users=50",
             "item_encoder.finetune_steps=2"] if smoke else []  # the smoke stage 1 (prepare --smoke)
    extra += seed_overrides(seed)
    if epochs and not smoke:  # the same epoch cap for every variant: a CPU-sized run that stays comparable
        extra += [f"train.epochs={epochs}", f"train.sasrec_epochs={max(epochs, 30)}"]
    if patience is not None:
        extra += [f"train.patience={patience}", f"train.sasrec_patience={patience}"]
    if pause_after is not None:
        extra += [f"train.pause_after={pause_after}"]
    if sasrec_from is not None:
        from bench.sasrec_sweep import chosen_overrides

        chosen = chosen_overrides(sasrec_from, dataset, sasrec_layout, weights=True)
        # leave-one-out runs load the very SASRec the sweep trained and scored, where it kept it
        loaded = [o for o in chosen if o.startswith("train.sasrec_weights=")]
        extra += [o for o in chosen if o not in loaded]
    else:
        loaded = []
    if long_len:  # the lightweight recommender's window (default 1,024; attention cost grows with its square)
        extra += [f"hybrid.long_len={long_len}"]
    protocols = [p for p in plan if not only or p in only]
    started = time.perf_counter()
    if base_from is not None:
        missing = [p for p in protocols if not (base_from / p / BASE[p] / "sasrec.pt").is_file()]
        if missing:
            raise SystemExit(f"--base-from needs finished base runs with sasrec.pt; none in "
                             f"{[str(base_from / p / BASE[p]) for p in missing]}")
        return _wait([_launch(dataset, out, p, v, base_from / p / BASE[p], False, budget, extra)
                      for p in protocols for v in plan[p]])
    for protocol in protocols:
        _point_stage1_at(out / f"stage1-{protocol}", dataset)
    # With the sweep's kept SASRec every leave-one-out run loads its own copy beside the prepared stage 1, so its
    # variants need not wait for the base run (whose SASRec they would otherwise start from)
    own_sasrec = {p for p in protocols if p == "leave_one_out" and loaded}

    def launch_variant(p: str, v: str):
        if p in own_sasrec:
            return _launch(dataset, out, p, v, base_stage1(out / f"stage1-{p}"), True, budget, extra + loaded)
        return _launch(dataset, out, p, v, out / p / BASE[p], False, budget, extra)

    if variants:  # the base runs must be there already (but where the variants load the sweep's SASRec)
        missing = [p for p in protocols if p not in own_sasrec and not (out / p / BASE[p] / "metrics.json").is_file()]
        if missing:
            raise SystemExit(f"--variant needs finished base runs; none in {[str(out / p / BASE[p]) for p in missing]}")
        codes, bases = {f"{p}/{BASE[p]}": 0 for p in protocols}, []
    else:
        codes = {f"{p}/{BASE[p]}": 0 for p in protocols if resumable_done(out / p / BASE[p], pause_after)}
        bases = [_launch(dataset, out, p, BASE[p], base_stage1(out / f"stage1-{p}"), True, budget,
                         extra + (loaded if p == "leave_one_out" else []))
                 for p in protocols if f"{p}/{BASE[p]}" not in codes]
    pending = [(p, v) for p in protocols for v in plan[p]
               if v != BASE[p] and not resumable_done(out / p / v, pause_after)]
    codes.update(_wait(bases + [launch_variant(p, v) for p, v in pending if p in own_sasrec]))
    rest = [(p, v) for p, v in pending if p not in own_sasrec and codes[f"{p}/{BASE[p]}"] == 0]
    codes.update(_wait([launch_variant(p, v) for p, v in rest]))
    print(f"[mechanisms] {len(codes)} runs in {time.perf_counter() - started:.0f} s", flush=True)
    return codes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mechanisms", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("prepare", "run", "peer", "diagnose", "headroom", "report", "add-peer",
                                         "add-warm-start", "adopt-sasrec"))
    parser.add_argument("--dataset", default="../shared/data/ml-1m")
    parser.add_argument("--out", default="runs/mechanisms")
    parser.add_argument("--budget", type=float, default=None, help="seconds of training per model (default: none)")
    parser.add_argument("--only", action="append", help="protocol(s) to run (default: the suite's)")
    parser.add_argument("--suite", choices=sorted(SUITES), default="mechanisms",
                        help="mechanisms: K, long history, codes; llm: the LLM backbone (SmolLM2 vs default)")
    parser.add_argument("--smoke", action="store_true", help="1 epoch, 50 validation users: checks the wiring only")
    parser.add_argument("--epochs", type=int, default=None,
                        help="run: cap stage 2 at E epochs and SASRec at max(E, 30), the same for every variant; "
                             "peer: the epoch cap (default PEER_EPOCH_CAP, 300), raised where a peer reached it")
    parser.add_argument("--long-len", type=int, default=None,
                        help="run: older coded items the lightweight recommender reads (default 1024)")
    parser.add_argument("--max-users", type=int, default=None,
                        help="prepare/run: a random subsample of this many users (all their items), in OUT/data/")
    parser.add_argument("--variant", action="append", dest="variants",
                        help="run: only this variant (repeatable), on the base runs already in --out; diagnose: "
                             "these runs; add-warm-start: the candidate run(s) of --out to add (default: its preset)")
    parser.add_argument("--base-from", type=Path, default=None,
                        help="run: train every variant (the base one too) as stage 2 alone on the finished base runs "
                             "(stage 1 + SASRec) of this earlier --out")
    parser.add_argument("--sasrec-from", type=Path, default=None,
                        help="run: our SASRec with the settings chosen on validation by this bench.sasrec_sweep --out")
    parser.add_argument("--sasrec-layout", action="append", metavar="KEY=VALUE",
                        help="run: with --sasrec-from, the best point of this layout only (bench.sasrec_sweep --set "
                             "syntax; input_norm=false = our own layout); repeatable")
    parser.add_argument("--peer", action="append", dest="peers",
                        help="peer: the peer(s) to run (bench/peers/runner.py PEERS; default recbole-sasrec)")
    parser.add_argument("--pause-after", type=float, default=None,
                        help="peer/run: stop at the first epoch end past this many seconds, keeping a checkpoint "
                             "(exit 75); the same command resumes")
    parser.add_argument("--patience", type=int, default=PEER_PATIENCE,
                        help="peer/run: epochs without a validation NDCG@10 gain before stopping (at least 10)")
    parser.add_argument("--warm-start-from", type=Path, action="append", dest="warm_starts", default=[],
                        help="report (converged): another OUT on the same split whose preset HyMiRec started from "
                             "another SASRec; HyMiRec's row is the warm start validation chose (repeatable)")
    parser.add_argument("--seed", type=int, default=0,
                        help="prepare/run: the training seed of every model in OUT (one OUT per seed, same users); "
                             "report reads it from the runs and names it in the row")
    parser.add_argument("--record", help="report: write the record here (bench/records/...); add-peer, "
                        "add-warm-start, adopt-sasrec: the record to amend")
    parser.add_argument("--machine", default="development machine kind (2 CPU cores, 24 GiB, no GPU)")
    parser.add_argument("--command", default="python -m bench.mechanisms run", help="report: the command to cite")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.patience < PEER_PATIENCE:  # peer and run: the converged view's rule
        parser.error(f"--patience {args.patience}: the converged view's rule is at least {PEER_PATIENCE}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.max_users and args.step in ("prepare", "run", "peer"):
        args.dataset = user_cut(args.step, args.dataset, out, args.max_users, args.base_from)
    if args.step == "prepare":
        prepare(args.dataset, out, args.smoke, args.suite, args.only, args.seed)
    elif args.step == "peer":  # a peer library to its own early stop on the leave-one-out split
        finished = [run_peer_converged(args.dataset, out, name, pause_after=args.pause_after, patience=args.patience,
                                       epoch_cap=args.epochs or PEER_EPOCH_CAP) is not None
                    for name in args.peers or ["recbole-sasrec"]]
        return 0 if all(finished) else PAUSED_EXIT  # paused with a checkpoint (--pause-after); run it again
    elif args.step in ("add-peer", "add-warm-start", "adopt-sasrec"):  # a run finished after its record joins it
        from bench.record_amend import CONVERGED_AMENDMENTS, amend_file

        if not args.record or (args.step == "adopt-sasrec" and not args.sasrec_from):
            parser.error(f"{args.step}: give the --record to amend (adopt-sasrec: and the sweep, --sasrec-from)")
        if args.variants and args.step != "add-warm-start":
            parser.error(f"{args.step}: --variant names add-warm-start's candidates only")
        amend = CONVERGED_AMENDMENTS[args.step]
        try:
            done = amend_file(Path(args.record),
                              lambda record: amend(record, out, args.sasrec_from, args.variants, args.dataset))
            print(f"{args.step}: {done}", file=sys.stderr)
        except ValueError as error:
            parser.error(f"{args.step}: {error}")
    elif args.step == "headroom":  # how far K vectors could beat one (oracle), and history clusters
        from bench.interest_diagnostics import headroom

        for variant in args.variants or ["k1"]:
            headroom(out, variant)
    elif args.step == "diagnose":  # bench/interest_diagnostics.py: each interest alone, and their mean
        from bench.interest_diagnostics import diagnose

        diagnose(out, args.variants or [v for v in MULTI_CANDIDATES if (out / "window" / v / "metrics.json").is_file()])
    elif args.step == "run":
        from bench.sasrec_sweep import parse_layout

        if args.sasrec_layout and args.sasrec_from is None:
            parser.error("--sasrec-layout chooses among the points of --sasrec-from: give both")
        codes = run(args.dataset, out, args.budget, args.smoke, args.only, args.suite, args.epochs, args.long_len,
                    args.variants, args.base_from, args.sasrec_from,
                    args.patience if args.patience != PEER_PATIENCE else None, args.pause_after,
                    parse_layout(args.sasrec_layout, "--sasrec-layout") if args.sasrec_layout else None, args.seed)
        if all(c in (0, PAUSED_EXIT) for c in codes.values()) and PAUSED_EXIT in codes.values():
            return PAUSED_EXIT  # paused with checkpoints (--pause-after); run the same command again
        return 0 if all(c == 0 for c in codes.values()) else 1
    else:
        seed = trained_seed(out)  # a replicate's record is its own row, named so
        name = Path(args.dataset).name + (f", {args.max_users:,} random users" if args.max_users else "") + (
            f", seed {seed}" if seed else "")
        from bench.mechanisms_report import report
        from bench.results_page import emit_area_record

        emit_area_record(report(out, name, args.command, args.machine, args.suite, args.warm_starts), args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
