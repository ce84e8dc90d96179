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

from bench.methods import BENCH_PRESET, DIM, MULTI_INTEREST

LONG = ["hybrid.long_len=1024", "hybrid.long_window=older"]
ONE_RULE = ["train.patience=10", "train.sasrec_patience=10", "train.epochs=200", "train.sasrec_epochs=200",
            f"hybrid.out_dim={DIM}", f"item_encoder.id_embedding_dim={DIM}", "hybrid.recent_n=50"]
# K = 1 with the multi-interest training (W = 10 windows, DMIL + dense loss, no anchor): differs from k3 in K only
K1_SAME_TRAINING = [o for o in MULTI_INTEREST if not o.startswith("hybrid.n_interests")] + ["hybrid.n_interests=1"]
VARIANTS: dict[str, list[str]] = {
    "k1": K1_SAME_TRAINING,
    "k3": list(MULTI_INTEREST),
    "k3-recent-only": list(MULTI_INTEREST) + ["hybrid.use_lightweight=false"],
    "k3-exact": list(MULTI_INTEREST) + ["hybrid.use_codebook=false"],
    # How the window targets train the queries (training/dmil.py), one setting each on top of k3
    "k3-nearest": list(MULTI_INTEREST) + ["hybrid.interest_routing=nearest"],
    "k3-holistic": list(MULTI_INTEREST) + ["hybrid.holistic_interest=true"],
    "k3-maxloss": list(MULTI_INTEREST) + ["hybrid.max_merge_weight=1.0"],
    "k5-maxloss": [o for o in MULTI_INTEREST if not o.startswith("hybrid.n_interests")]
    + ["hybrid.n_interests=5", "hybrid.max_merge_weight=1.0"],
    "preset": LONG,  # the leave-one-out bench's own configuration (K = 1, anchored), with the long history
    # The LLM recommender's backbone: SmolLM2-135M's first 4 of 30 layers (CPU-sized; width 576) pretrained, the same
    # shape freshly initialised, against the preset's default (a 2-layer, 128-wide Qwen2 trained from scratch).
    # The backbone learns at 1e-4 (the layers around it at the preset's rate), so fine-tuning keeps what it knows.
    "smollm2-4": LONG + ["hybrid.llm.path=smollm2", "hybrid.llm.keep_layers=4", "hybrid.llm.lr=0.0001"],
    "smollm2-4-random": LONG + ["hybrid.llm.path=smollm2", "hybrid.llm.keep_layers=4", "hybrid.llm.lr=0.0001",
                                "hybrid.llm.init=random"],
}
SUITES = {
    "mechanisms": {"window": ["k1", "k3", "k3-recent-only", "k3-exact"],
                   "leave_one_out": ["preset", "k1", "k3", "k3-recent-only"]},
    "llm": {"leave_one_out": ["preset", "smollm2-4", "smollm2-4-random"]},
    # how the window targets train the K queries: the paper's balanced DMIL against the alternatives
    "interests": {"window": ["k1", "k3", "k3-nearest", "k3-holistic", "k3-maxloss", "k5-maxloss"],
                  "leave_one_out": ["k1", "k3", "k3-maxloss", "k5-maxloss"]},
}
# The K ≥ 3 trainings that compete for "the multi-interest model"; the report picks one on validation Recall@50
MULTI_CANDIDATES = ("k3", "k3-nearest", "k3-holistic", "k3-maxloss", "k5-maxloss")
# --quick: the comparisons issue 25 asks for, on a CPU budget (no long-vs-recent row under leave-one-out)
SUITES["quick"] = {"window": SUITES["mechanisms"]["window"], "leave_one_out": ["preset", "k1", "k3"]}
BASE = {"window": "k1", "leave_one_out": "preset"}  # the variant each protocol's base run trains


def base_overrides(protocol: str, budget: float | None) -> list[str]:
    return (list(BENCH_PRESET) + ONE_RULE + LONG + [f"train.protocol={protocol}"]
            + ([f"train.max_train_seconds={budget}"] if budget else []))


def run_config(dataset: str, run_dir: Path, protocol: str, variant: str, budget: float | None, extra=()):
    from training.config import RunConfig

    cfg = RunConfig(dataset=str(Path(dataset).resolve()), run_dir=str(run_dir))
    return cfg.override(base_overrides(protocol, budget) + VARIANTS[variant] + list(extra))


def prepare(dataset: str, out: Path, smoke: bool = False, suite: str = "mechanisms") -> None:
    """Stage 1 per protocol into OUT/stage1-<protocol>: item_embeddings.npy + the config/metrics reuse checks."""
    from core.artifacts import RunLayout, write_json_atomic
    from training.train import start_run, train_stage1

    for protocol in SUITES[suite]:
        layout = RunLayout.at(out / f"stage1-{protocol}")
        extra = ["item_encoder.finetune_steps=2"] if smoke else []
        state = start_run(run_config(dataset, layout.root, protocol, BASE[protocol], None, extra))
        train_stage1(state)
        import numpy as np

        np.save(layout.item_embeddings, state.item_emb)
        write_json_atomic(layout.config, state.config.to_dict())
        write_json_atomic(layout.metrics, {"item_representation": state.metrics["item_representation"]})
        print(f"[mechanisms] stage 1 ({protocol}) → {layout.root}", flush=True)


def subsample_users(dataset: str, out: Path, n_users: int, seed: int = 0) -> str:
    """A RecBole atomic dataset cut to ``n_users`` random users (every interaction of each kept): the CPU-sized
    version of a large set, with its long histories intact. Written to OUT/data/<name>-u<N>/; returns that path."""
    import numpy as np

    src = Path(dataset)
    inter = next(src.glob("*.inter"), None) if src.is_dir() else None
    if inter is None:
        raise ValueError(f"--max-users needs a RecBole atomic folder (<name>.inter), got {dataset}")
    lines = inter.read_text().splitlines()
    users = sorted({line.split("\t", 1)[0] for line in lines[1:]})
    keep = set(np.random.default_rng(seed).choice(users, size=min(n_users, len(users)), replace=False).tolist())
    dst = out / "data" / f"{src.name}-u{n_users}"
    dst.mkdir(parents=True, exist_ok=True)
    name = inter.name.removesuffix(".inter")
    (dst / f"{name}.inter").write_text("\n".join([lines[0]] + [line for line in lines[1:]
                                                              if line.split("\t", 1)[0] in keep]) + "\n")
    for item_file in src.glob("*.item"):
        (dst / item_file.name).write_bytes(item_file.read_bytes())
    print(f"[mechanisms] {len(keep)} of {len(users)} users of {src} → {dst}", flush=True)
    return str(dst)


def _point_stage1_at(stage1: Path, dataset: str) -> None:
    """A carried stage-1 folder names the dataset where it was made; name this machine's path (same files)."""
    path = stage1 / "config.json"
    config = json.loads(path.read_text())
    config["dataset"] = str(Path(dataset).resolve())
    path.write_text(json.dumps(config, indent=2, sort_keys=True))


def _launch(dataset: str, out: Path, protocol: str, variant: str, stage1_from: Path, train_sasrec: bool,
            budget: float | None, extra: list[str]) -> tuple[str, subprocess.Popen]:
    run_dir = out / protocol / variant
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = run_config(dataset, run_dir, protocol, variant, budget,
                     extra + [f"stage1_from={stage1_from}", f"train_sasrec={'true' if train_sasrec else 'false'}"])
    (run_dir / "run_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    log = open(run_dir / "train.log", "w")
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
        variants: list[str] | None = None) -> dict:
    """Base runs (our SASRec + the base variant) for both protocols at once, then every other variant at once.
    With ``variants``: only those, on base runs already in OUT (a variant added to a finished run)."""
    plan = SUITES[suite]
    if variants:
        unknown = sorted(set(variants) - set(VARIANTS))
        if unknown:
            raise SystemExit(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
        plan = {p: [v for v in variants if v != BASE[p]] for p in plan}
    extra = ["train.epochs=1", "train.sasrec_epochs=1", "train.max_eval_users=50",
             "item_encoder.finetune_steps=2"] if smoke else []  # the smoke stage 1 (prepare --smoke)
    if epochs and not smoke:  # the same epoch cap for every variant: a CPU-sized run that stays comparable
        extra += [f"train.epochs={epochs}", f"train.sasrec_epochs={max(epochs, 30)}"]
    if long_len:  # the lightweight recommender's window (default 1,024; attention cost grows with its square)
        extra += [f"hybrid.long_len={long_len}"]
    protocols = [p for p in plan if not only or p in only]
    started = time.perf_counter()
    for protocol in protocols:
        _point_stage1_at(out / f"stage1-{protocol}", dataset)
    if variants:  # the base runs must be there already
        missing = [p for p in protocols if not (out / p / BASE[p] / "metrics.json").is_file()]
        if missing:
            raise SystemExit(f"--variant needs finished base runs; none in {[str(out / p / BASE[p]) for p in missing]}")
        codes = {f"{p}/{BASE[p]}": 0 for p in protocols}
    else:
        codes = _wait([_launch(dataset, out, p, BASE[p], out / f"stage1-{p}", True, budget, extra)
                       for p in protocols])
    rest = [(p, v) for p in protocols for v in plan[p] if v != BASE[p] and codes[f"{p}/{BASE[p]}"] == 0]
    codes.update(_wait([_launch(dataset, out, p, v, out / p / BASE[p], False, budget, extra) for p, v in rest]))
    print(f"[mechanisms] {len(codes)} runs in {time.perf_counter() - started:.0f} s", flush=True)
    return codes


WINDOW_COLUMNS = ("Recall@20", "Recall@50", "Recall@100", "NDCG@50", "Coverage@10", "Coverage@50", "ILD@50")
QUOTA_COLUMNS = ("Recall@50", "Coverage@50")  # of the quota merge (each interest k // K slots), K > 1 only
LOO_COLUMNS = ("NDCG@10", "Recall@10")


def _metrics(out: Path, protocol: str, variant: str) -> dict | None:
    path = out / protocol / variant / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _diagnostics(out: Path, protocol: str, variant: str) -> dict[str, dict]:
    """What ``diagnose`` measured for a multi-interest run (bench/interest_diagnostics.py), if it ran."""
    path = out / protocol / variant / "interest_diagnostics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _rel(a: float | None, b: float | None) -> str:
    return f"{100 * (a / b - 1):+.1f} %" if a is not None and b else "–"


TITLES = {"mechanisms": "several interests, long coded history, codes vs exact",
          "quick": "several interests, long coded history, codes vs exact",
          "llm": "the LLM recommender's backbone (SmolLM2 pretrained vs random vs default)",
          "interests": "how the window targets train K ≥ 3 interests (balanced DMIL, nearest, holistic, max-merge loss)"}


def report(out: Path, dataset_name: str, command: str, machine: str, suite: str = "mechanisms") -> dict:
    """The record (bench/records format) of one `run`: a row per method and merge, the comparisons below it."""
    got: dict = {}
    by_label: dict[str, dict] = {}  # one row per method: its window and its leave-one-out results side by side
    plan = {p: list(dict.fromkeys(v for variants in SUITES.values() for v in variants.get(p, []))) for p in BASE}
    for protocol, variants in plan.items():
        for variant in variants:
            m = _metrics(out, protocol, variant)
            if m is None:
                continue
            got[(protocol, variant)] = m
            test = dict(m["hymirec"]["test"])
            if protocol == "window" and variant != "k1":  # the quota merge's figures as columns of the same row
                test.update({f"quota {key}": m["hymirec"]["test_quota"][key] for key in QUOTA_COLUMNS})
            methods = [("HyMiRec " + variant, test, m["hymirec"])]
            if protocol == "window":
                methods += [(f"HyMiRec {variant} ({name})", test, {})
                            for name, test in _diagnostics(out, protocol, variant).items()]
            if variant == BASE[protocol]:
                methods = [("Popularity", m["popularity"]["test"], {})] + (
                    [("SASRec (ours)", m["sasrec"]["test"], m["sasrec"])] if "sasrec" in m else []) + methods
            for label, test, info in methods:
                by_label.setdefault(label, {})[protocol] = (test, info)
    rows = []
    for label, results in by_label.items():
        w_test, w_info = results.get("window", ({}, {}))
        l_test, l_info = results.get("leave_one_out", ({}, {}))
        cells = ([f"{w_test[c]:.4f}" if c in w_test else "–" for c in WINDOW_COLUMNS]
                 + [f"{w_test['quota ' + c]:.4f}" if "quota " + c in w_test else "–" for c in QUOTA_COLUMNS]
                 + [f"{l_test[c]:.4f}" if c in l_test else "–" for c in LOO_COLUMNS])
        # the validation score early stopping followed (our SASRec: next-item NDCG@10, which is the LOO metric)
        valid_scores = (w_info.get("valid_best"), l_info.get("valid_best", l_info.get("valid_best_ndcg10")))
        valid = " / ".join(f"{v:.4f}" if v is not None else "–" for v in valid_scores)
        epochs = " / ".join(str(i.get("epochs", "–")) for i in (w_info, l_info))
        rows.append([label] + cells + [valid, epochs])
    w = {v: got[("window", v)]["hymirec"] for v in plan["window"] if ("window", v) in got}
    loo = {v: got[("leave_one_out", v)] for v in plan["leave_one_out"] if ("leave_one_out", v) in got}

    def wv(v, merge, key):
        return w[v][merge].get(key) if v in w else None

    def lv(v, key="NDCG@10"):
        return loo[v]["hymirec"]["test"].get(key) if v in loo else None

    # The K ≥ 3 model is picked on validation (max merge's Recall@50, the metric stage 2 early-stops on)
    trained = [v for v in MULTI_CANDIDATES if v in w]
    chosen = max(trained, key=lambda v: w[v].get("valid_best") or -1.0) if trained else None
    sasrec_loo = loo.get(BASE["leave_one_out"], {}).get("sasrec", {}).get("test", {}).get("NDCG@10")
    configs = [m["config"] for m in got.values() if "config" in m]
    long_len = ", ".join(sorted({f"{c['hybrid']['long_len']:,}" for c in configs})) or "?"
    epochs = ", ".join(sorted({str(c["train"]["epochs"]) for c in configs})) or "?"
    capped = sum(m["hymirec"].get("epochs") == m["config"]["train"]["epochs"] for m in got.values() if "config" in m)
    capped_note = (f" {capped} of {len(got)} HyMiRec runs stopped at the epoch cap, not by early stopping: first "
                   "measurements, not converged results." if capped else "")
    checks = [
        ("K=3 vs K=1, window Recall@50 (max merge; quota merge)",
         f"{_rel(wv('k3', 'test', 'Recall@50'), wv('k1', 'test', 'Recall@50'))}; "
         f"{_rel(wv('k3', 'test_quota', 'Recall@50'), wv('k1', 'test', 'Recall@50'))}", "≥ +5 %"),
        ("K=3 vs K=1, window Coverage@50 (max merge; quota merge)",
         f"{_rel(wv('k3', 'test', 'Coverage@50'), wv('k1', 'test', 'Coverage@50'))}; "
         f"{_rel(wv('k3', 'test_quota', 'Coverage@50'), wv('k1', 'test', 'Coverage@50'))}", "≥ +5 %"),
        ("K=3 vs K=1, leave-one-out NDCG@10", _rel(lv("k3"), lv("k1")), "≥ −2 %"),
        (f"K≥3 chosen on validation ({chosen}) vs K=1, window Recall@50 (max; quota)",
         f"{_rel(wv(chosen, 'test', 'Recall@50'), wv('k1', 'test', 'Recall@50'))}; "
         f"{_rel(wv(chosen, 'test_quota', 'Recall@50'), wv('k1', 'test', 'Recall@50'))}", "≥ +5 %"),
        (f"K≥3 chosen on validation ({chosen}) vs K=1, window Coverage@50 (max; quota)",
         f"{_rel(wv(chosen, 'test', 'Coverage@50'), wv('k1', 'test', 'Coverage@50'))}; "
         f"{_rel(wv(chosen, 'test_quota', 'Coverage@50'), wv('k1', 'test', 'Coverage@50'))}", "≥ +5 %"),
        (f"K≥3 chosen on validation ({chosen}) vs K=1, leave-one-out NDCG@10", _rel(lv(chosen), lv("k1")),
         "≥ −2 %"),
        (f"long coded history ({long_len} older items) vs recent only, window Recall@50 (K=3)",
         _rel(wv("k3", "test", "Recall@50"), wv("k3-recent-only", "test", "Recall@50")), "> 0"),
        ("long coded history vs recent only, leave-one-out NDCG@10 (K=3)", _rel(lv("k3"), lv("k3-recent-only")), "> 0"),
        ("codes (12 B/item) vs exact embeddings (1,536 B/item), window Recall@50 (K=3)",
         _rel(wv("k3", "test", "Recall@50"), wv("k3-exact", "test", "Recall@50")), "within ±1 %"),
        ("HyMiRec (preset + long history) vs our SASRec, leave-one-out NDCG@10",
         _rel(lv("preset"), sasrec_loo), "≥ +10 %"),
        ("SmolLM2 (4 layers) pretrained vs the same shape random, leave-one-out NDCG@10",
         _rel(lv("smollm2-4"), lv("smollm2-4-random")), "measured"),
        ("SmolLM2 (4 layers) pretrained vs the default 2 × 128 Qwen2, leave-one-out NDCG@10",
         _rel(lv("smollm2-4"), lv("preset")), "measured"),
    ]
    checks = [c for c in checks if c[1].strip("–; ")]  # only what this run measured
    columns = (["method"] + [c.replace("Recall", "R").replace("NDCG", "N").replace("Coverage", "Cov")
                             for c in WINDOW_COLUMNS]
               + [f"quota {c.replace('Recall', 'R').replace('Coverage', 'Cov')}" for c in QUOTA_COLUMNS]
               + [f"LOO {c.replace('NDCG', 'N').replace('Recall', 'R')}"
                                                         for c in LOO_COLUMNS] + ["valid (W / LOO)", "epochs (W / LOO)"])
    return {
        "area": f"Mechanisms: {TITLES[suite]} ({dataset_name})",
        "measured_at": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": machine, "command": command,
        "setup": ("Variants differ in one setting each, on one stage 1 per protocol; the bench preset (dim 64, SASRec "
                  f"ids, exact softmax) with {long_len} older items from codes and 50 recent; patience 10 for every "
                  f"model, stage 2 capped at {epochs} epochs (SASRec at 30).{capped_note} "
                  "Window protocol: last 10 items of each user are the test set, the 10 before validate; coverage "
                  "labels: " + json.dumps(sorted({m.get('interest_labels', {}).get('source', '?')
                                                   for (p, _), m in got.items() if p == 'window'})) + "; "
                  "leave-one-out (LOO) rows: next-item NDCG@10 and Recall@10. Test numbers, but for the valid column: "
                  "the best validation score that early stopping followed (window: Recall@50, max merge; LOO: "
                  "NDCG@10); every choice was made on validation, the K ≥ 3 training too. Rows in parentheses re-score a "
                  "run's test users (diagnose): its interests' mean as one vector, each interest alone (averaged "
                  "over the K), and a soft merge ranking by max + λ × mean of the interests' scores, λ in "
                  "{0, 0.25, 0.5, 1, 2, 4} picked on validation Recall@50."),
        "columns": columns,
        "rows": rows,
        "reading": "; ".join(f"{name}: {value} (goal {goal})" for name, value, goal in checks),
        "checks": [{"comparison": n, "measured": v, "goal": g} for n, v, g in checks],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mechanisms", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("prepare", "run", "diagnose", "report"))
    parser.add_argument("--dataset", default="../shared/data/ml-1m")
    parser.add_argument("--out", default="runs/mechanisms")
    parser.add_argument("--budget", type=float, default=None, help="seconds of training per model (default: none)")
    parser.add_argument("--only", action="append", help="protocol(s) to run (default: the suite's)")
    parser.add_argument("--suite", choices=sorted(SUITES), default="mechanisms",
                        help="mechanisms: K, long history, codes; llm: the LLM backbone (SmolLM2 vs default)")
    parser.add_argument("--smoke", action="store_true", help="1 epoch, 50 validation users: checks the wiring only")
    parser.add_argument("--epochs", type=int, default=None,
                        help="run: cap stage 2 at E epochs and SASRec at max(E, 30), the same for every variant")
    parser.add_argument("--long-len", type=int, default=None,
                        help="run: older coded items the lightweight recommender reads (default 1024)")
    parser.add_argument("--max-users", type=int, default=None,
                        help="prepare/run: a random subsample of this many users (all their items), in OUT/data/")
    parser.add_argument("--variant", action="append", dest="variants",
                        help="run: only this variant (repeatable), on the base runs already in --out; diagnose: these runs")
    parser.add_argument("--record", help="report: write the record here (bench/records/...)")
    parser.add_argument("--machine", default="development machine kind (2 CPU cores, 24 GiB, no GPU)")
    parser.add_argument("--command", default="python -m bench.mechanisms run", help="report: the command to cite")
    args = parser.parse_args(argv)
    out = Path(args.out)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.max_users and args.step in ("prepare", "run"):
        args.dataset = (subsample_users(args.dataset, out, args.max_users) if args.step == "prepare"
                        else str(out / "data" / f"{Path(args.dataset).name}-u{args.max_users}"))
    if args.step == "prepare":
        prepare(args.dataset, out, args.smoke, args.suite)
    elif args.step == "diagnose":  # bench/interest_diagnostics.py: each interest alone, and their mean
        from bench.interest_diagnostics import diagnose

        diagnose(out, args.variants or [v for v in MULTI_CANDIDATES if (out / "window" / v / "metrics.json").is_file()])
    elif args.step == "run":
        codes = run(args.dataset, out, args.budget, args.smoke, args.only, args.suite, args.epochs, args.long_len,
                    args.variants)
        return 0 if all(c == 0 for c in codes.values()) else 1
    else:
        name = Path(args.dataset).name + (f", {args.max_users:,} random users" if args.max_users else "")
        record = report(out, name, args.command, args.machine, args.suite)
        text = json.dumps(record, indent=2, ensure_ascii=False)
        if args.record:
            Path(args.record).write_text(text + "\n")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
