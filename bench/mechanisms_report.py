"""The mechanisms bench's record (bench/records format) from the runs of bench/mechanisms.py: a row per method and
merge, the acceptance comparisons of issue 25 computed from the same numbers.

    python -m bench.mechanisms report --out runs/mech --record bench/records/mechanisms-ml-1m.json
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from bench.converged_view import (converged_summary, finished_peers, hymirec_choice, published_ndcg10, run_metrics,
                                  sasrec_choice, validated_choice)
from bench.mechanism_variants import (BASE, HYMIREC_CANDIDATES, MULTI_CANDIDATES, SCRATCH_CANDIDATES, SUITES,
                                      TEXT_CANDIDATES)
from bench.peers.converged import PEER_PATIENCE
from bench.paired import format_gain, run_gain


WINDOW_COLUMNS = ("Recall@20", "Recall@50", "Recall@100", "NDCG@50", "Coverage@10", "Coverage@50", "ILD@50")
QUOTA_COLUMNS = ("Recall@50", "Coverage@50")  # of the quota merge (each interest k // K slots), K > 1 only
LOO_COLUMNS = ("NDCG@10", "Recall@10")


def reading_of(checks: list[dict]) -> str:
    """A record's reading line: its checks, "comparison: measured (goal g)", in order (the amendments reuse it)."""
    return "; ".join(f"{c['comparison']}: {c['measured']} (goal {c['goal']})" for c in checks)


def _diagnostics(out: Path, protocol: str, variant: str) -> dict[str, dict]:
    """What ``diagnose`` measured for a multi-interest run (bench/interest_diagnostics.py), if it ran."""
    path = out / protocol / variant / "interest_diagnostics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _rel(a: float | None, b: float | None) -> str:
    return format_gain(a / b - 1) if a is not None and b else "–"


def _rel_ci(a: float | None, b: float | None, run_a: Path, run_b: Path, method_a="hymirec", method_b="hymirec") -> str:
    """The relative gain with its paired-bootstrap interval over the test users, where both runs kept their lists."""
    with_interval = run_gain(run_a, run_b, method_a, method_b) if a is not None and b else "–"
    return with_interval if with_interval != "–" else _rel(a, b)


TITLES = {"mechanisms": "several interests, long coded history, codes vs exact",
          "quick": "several interests, long coded history, codes vs exact",
          "llm": "the LLM recommender's backbone (SmolLM2 pretrained vs random vs default)",
          "interests": "how the window targets train K ≥ 3 interests (balanced DMIL, nearest, holistic, max-merge loss)",
          "long-loo": "the long coded history against recent items only, leave-one-out",
          "converged": "HyMiRec's preset against converged SASRec, each model to its own early stop",
          "warm-start": "HyMiRec's preset warm-started from another SASRec, to its own early stop",
          "maxmerge": "K ≥ 3 interests trained through the merged score, or seeded by recent tastes; the room for K > 1",
          "steer": "K = 1 converged: its interest tilted toward the user's history clusters (K > 1 without "
                   "training), the room for K > 1, the long coded history, codes vs exact"}


def report(out: Path, dataset_name: str, command: str, machine: str, suite: str = "mechanisms",
           warm_starts: list[Path] = ()) -> dict:
    """The record (bench/records format) of one `run`: a row per method and merge, the comparisons below it.
    ``warm_starts``: other OUTs of the same split whose preset HyMiRec started from another SASRec; HyMiRec's
    comparisons take the one validation chose (:func:`hymirec_choice`, OUT's dropout candidates too), each gets a row."""
    got: dict = {}
    by_label: dict[str, dict] = {}  # one row per method: its window and its leave-one-out results side by side
    plan = {p: list(dict.fromkeys(v for variants in SUITES.values() for v in variants.get(p, []))) for p in BASE}
    for protocol, variants in plan.items():
        for variant in variants:
            m = run_metrics(out, protocol, variant)
            if m is None:
                continue
            got[(protocol, variant)] = m
            test = dict(m["hymirec"]["test"])
            if protocol == "window" and not variant.startswith("k1"):  # K > 1: the quota merge's figures beside
                test.update({f"quota {key}": m["hymirec"]["test_quota"][key] for key in QUOTA_COLUMNS})
            methods = [("HyMiRec " + variant, test, m["hymirec"])]
            if protocol == "window":
                methods += [(f"HyMiRec {variant} ({name})", test, {})
                            for name, test in _diagnostics(out, protocol, variant).items()]
                headroom = out / protocol / variant / "interest_headroom.json"  # `headroom`: no trained interests
                if headroom.is_file():
                    methods += [(f"{name}, over {variant}'s item vectors", test, {})
                                for name, test in json.loads(headroom.read_text()).items()]
            if variant == BASE[protocol]:
                methods = [("Popularity", m["popularity"]["test"], {})] + (
                    [("SASRec (ours)", m["sasrec"]["test"], m["sasrec"])] if "sasrec" in m else []) + methods
            for label, test, info in methods:
                by_label.setdefault(label, {})[protocol] = (test, info)
    warm = hymirec_choice(out, list(warm_starts))
    sasrec = sasrec_choice(out, list(warm_starts))
    if sasrec and sasrec[1].parent.parent != out:  # a warm-start OUT trained the SASRec its validation chose
        by_label.setdefault("SASRec (ours)", {})["leave_one_out"] = (sasrec[0]["sasrec"]["test"], sasrec[0]["sasrec"])
    if warm:  # a row per candidate, each named by its warm start (and dropout); OUT's preset is the first
        by_label = {label: row for label, row in by_label.items()
                    if label not in {"HyMiRec " + v for v in HYMIREC_CANDIDATES}}
        own = f"HyMiRec preset, {warm['candidates'][0]['name']}"
        by_label = {own if label == "HyMiRec preset" else label: row for label, row in by_label.items()}
        for run in warm["candidates"][1:]:
            by_label[f"HyMiRec preset, {run['name']}"] = {
                "leave_one_out": (run["metrics"]["hymirec"]["test"], run["metrics"]["hymirec"])}
    peers = finished_peers(out)
    for peer in peers.values():
        by_label.setdefault(peer["label"], {})["leave_one_out"] = (
            peer["test"], {"epochs": f"{peer['epochs']} (best {peer['best_epoch']})"})
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
    sasrec_loo = sasrec[0]["sasrec"]["test"].get("NDCG@10") if sasrec else None
    # the strongest SASRec of the run: ours or a peer library's, both to their own early stop
    sasrecs = {"our SASRec": sasrec_loo} | {p["label"]: p["test"]["NDCG@10"] for p in peers.values()
                                            if "SASRec" in p["label"]}
    sasrecs = {k: v for k, v in sasrecs.items() if v is not None}
    strongest = max(sasrecs, key=sasrecs.get) if sasrecs else None
    configs = [m["config"] for m in got.values() if "config" in m]
    long_len = ", ".join(sorted({f"{c['hybrid']['long_len']:,}" for c in configs})) or "?"
    epochs = ", ".join(sorted({str(c["train"]["epochs"]) for c in configs})) or "?"
    capped = sum(m["hymirec"].get("epochs") == m["config"]["train"]["epochs"] for m in got.values() if "config" in m)
    # our SASRec's cap and patience as the runs that trained one had them (the others train none)
    sasrec_configs = [m["config"] for m in got.values() if "config" in m and m["config"].get("train_sasrec", True)]
    sasrec_cap = ", ".join(sorted({str(c["train"]["sasrec_epochs"]) for c in sasrec_configs or configs})) or "?"
    def listed(values) -> str:  # the distinct patiences, in order
        return ", ".join(str(v) for v in sorted(set(values)))

    patience = listed(c["train"].get("patience", PEER_PATIENCE) for c in configs) or str(PEER_PATIENCE)
    sasrec_patience = listed(c["train"].get("sasrec_patience", PEER_PATIENCE) for c in sasrec_configs)
    peer_patience = listed(p.get("patience", PEER_PATIENCE) for p in peers.values())
    diagnosed = any(_diagnostics(out, "window", v) for v in plan["window"])
    capped_note = (f" {capped} of {len(got)} HyMiRec runs stopped at the epoch cap, not by early stopping: first "
                   "measurements, not converged results." if capped
                   else " No epoch cap bound: every model stopped on its own early stopping.")

    scratch = validated_choice(loo, SCRATCH_CANDIDATES)
    text = validated_choice(loo, TEXT_CANDIDATES)

    def wdir(v):
        return out / "window" / str(v)

    def ldir(v):
        return out / "leave_one_out" / str(v)

    preset_dir = ldir(BASE["leave_one_out"])
    sasrec_dir = sasrec[1] if sasrec else preset_dir  # our SASRec's lists, for the paired intervals
    # HyMiRec's preset: OUT's, or the warm start validation chose among --warm-start-from runs
    hymirec_dir = warm["chosen"]["dir"] if warm else preset_dir
    hymirec_loo = warm["chosen"]["metrics"]["hymirec"]["test"]["NDCG@10"] if warm else lv("preset")
    warm_note = f", {warm['chosen']['name']}" if warm else ""
    checks = [
        ("K=3 vs K=1, window Recall@50 (max merge; quota merge)",
         f"{_rel(wv('k3', 'test', 'Recall@50'), wv('k1', 'test', 'Recall@50'))}; "
         f"{_rel(wv('k3', 'test_quota', 'Recall@50'), wv('k1', 'test', 'Recall@50'))}", "≥ +5 %"),
        ("K=3 vs K=1, window Coverage@50 (max merge; quota merge)",
         f"{_rel(wv('k3', 'test', 'Coverage@50'), wv('k1', 'test', 'Coverage@50'))}; "
         f"{_rel(wv('k3', 'test_quota', 'Coverage@50'), wv('k1', 'test', 'Coverage@50'))}", "≥ +5 %"),
        ("K=3 vs K=1, leave-one-out NDCG@10", _rel(lv("k3"), lv("k1")), "≥ −2 %"),
        (f"K≥3 chosen on validation ({chosen}) vs K=1, window Recall@50 (max; quota)",
         f"{_rel_ci(wv(chosen, 'test', 'Recall@50'), wv('k1', 'test', 'Recall@50'), wdir(chosen), wdir('k1'))}; "
         f"{_rel(wv(chosen, 'test_quota', 'Recall@50'), wv('k1', 'test', 'Recall@50'))}", "≥ +5 %"),
        (f"K≥3 chosen on validation ({chosen}) vs K=1, window Coverage@50 (max; quota)",
         f"{_rel(wv(chosen, 'test', 'Coverage@50'), wv('k1', 'test', 'Coverage@50'))}; "
         f"{_rel(wv(chosen, 'test_quota', 'Coverage@50'), wv('k1', 'test', 'Coverage@50'))}", "≥ +5 %"),
        (f"K≥3 chosen on validation ({chosen}) vs K=1, leave-one-out NDCG@10", _rel(lv(chosen), lv("k1")),
         "≥ −2 %"),
        (f"long coded history ({long_len} older items) vs recent only, window Recall@50 (K=3)",
         _rel(wv("k3", "test", "Recall@50"), wv("k3-recent-only", "test", "Recall@50")), "> 0"),
        ("long coded history vs recent only, leave-one-out NDCG@10 (K=3)", _rel(lv("k3"), lv("k3-recent-only")), "> 0"),
        (f"long coded history ({long_len} older items) vs recent only, leave-one-out NDCG@10 (preset, K=1)",
         _rel_ci(lv("preset"), lv("preset-recent-only"), ldir("preset"), ldir("preset-recent-only")), "> 0"),
        ("codes (12 B/item) vs exact embeddings (1,536 B/item), window Recall@50 (K=3)",
         _rel(wv("k3", "test", "Recall@50"), wv("k3-exact", "test", "Recall@50")), "within ±1 %"),
        (f"long coded history ({long_len} older items) vs recent only, window Recall@50 (K=1)",
         _rel_ci(wv("k1", "test", "Recall@50"), wv("k1-recent-only", "test", "Recall@50"), wdir("k1"),
                 wdir("k1-recent-only")), "> 0"),
        ("codes (12 B/item) vs exact embeddings (1,536 B/item), window Recall@50 (K=1)",
         _rel_ci(wv("k1", "test", "Recall@50"), wv("k1-exact", "test", "Recall@50"), wdir("k1"), wdir("k1-exact")),
         "within ±1 %"),
        (f"HyMiRec (preset + long history{warm_note}) vs our SASRec, leave-one-out NDCG@10",
         _rel_ci(hymirec_loo, sasrec_loo, hymirec_dir, sasrec_dir, "hymirec", "sasrec"), "≥ +10 %"),
        ("HyMiRec without the SASRec warm start (ids from scratch"
         + (f", {scratch} chosen on validation" if scratch and scratch != SCRATCH_CANDIDATES[0] else "")
         + ") vs our SASRec, leave-one-out NDCG@10",
         _rel_ci(lv(scratch), sasrec_loo, ldir(scratch), sasrec_dir, "hymirec", "sasrec"),
         "≥ +10 %"),
        *([("HyMiRec with items from their text only (no id tables, no warm start; " + text
            + (" chosen on validation" if sum(v in loo for v in TEXT_CANDIDATES) > 1 else "")
            + ") vs our SASRec, leave-one-out NDCG@10",
            _rel_ci(lv(text), sasrec_loo, ldir(text), sasrec_dir, "hymirec", "sasrec"), "≥ +10 %")]
          if text else []),
        (f"HyMiRec (preset + long history{warm_note}) vs the strongest SASRec ({strongest}), leave-one-out NDCG@10",
         _rel(hymirec_loo, sasrecs.get(strongest)) if len(sasrecs) > 1 else "–", "≥ +10 %"),
        ("SmolLM2 (4 layers) pretrained vs the same shape random, leave-one-out NDCG@10",
         _rel_ci(lv("smollm2-4"), lv("smollm2-4-random"), ldir("smollm2-4"), ldir("smollm2-4-random")), "measured"),
        ("SmolLM2 (4 layers) pretrained vs the default 2 × 128 Qwen2, leave-one-out NDCG@10",
         _rel_ci(lv("smollm2-4"), lv("preset"), ldir("smollm2-4"), preset_dir), "measured"),
        ("SmolLM2 (4 layers) pretrained, only LoRA adapters training vs fully fine-tuned, leave-one-out NDCG@10",
         _rel_ci(lv("smollm2-4-lora"), lv("smollm2-4"), ldir("smollm2-4-lora"), ldir("smollm2-4")), "measured"),
    ]
    headroom_path = out / "window" / BASE["window"] / "interest_headroom.json"
    if headroom_path.is_file():  # `headroom`: what K vectors could add (oracle), and what clustering alone adds
        headroom = json.loads(headroom_path.read_text())
        room = {name.split(":")[0].split(" (")[0]: m["Recall@50"] for name, m in headroom.items()}
        checks += [
            ("oracle, K=3 vs K=1 directions of the test window itself (not a method), window Recall@50",
             _rel(room.get("oracle K=3"), room.get("oracle K=1")), "room for K > 1"),
            ("history clusters, K=3 vs K=1 (last 50 items, no training), window Recall@50",
             _rel(room.get("history clusters K=3"), room.get("history clusters K=1")), "measured"),
        ]
        steered = {name: m for name, m in headroom.items() if " steered" in name}
        for name, m in steered.items():  # K = 1's own interest tilted toward history clusters, chosen on validation
            label = name.split(":")[0]
            checks += [(f"{label} vs K=1 (the same run's interest), window {key} (max; quota)",
                        f"{_rel(m.get(key), wv('k1', 'test', key))}; "
                        f"{_rel(m.get('quota ' + key), wv('k1', 'test', key))}", "≥ +5 %")
                       for key in ("Recall@50", "Coverage@50")]
    checks = [c for c in checks if c[1].strip("–; ")]  # only what this run measured
    columns = (["method"] + [c.replace("Recall", "R").replace("NDCG", "N").replace("Coverage", "Cov")
                             for c in WINDOW_COLUMNS]
               + [f"quota {c.replace('Recall', 'R').replace('Coverage', 'Cov')}" for c in QUOTA_COLUMNS]
               + [f"LOO {c.replace('NDCG', 'N').replace('Recall', 'R')}"
                                                         for c in LOO_COLUMNS] + ["valid (W / LOO)", "epochs (W / LOO)"])
    check_list = [{"comparison": n, "measured": v, "goal": g} for n, v, g in checks]
    return {
        # the epoch cap in the title when it binds: the same comparison under two caps is two sections
        "area": f"Mechanisms: {TITLES[suite]} ({dataset_name}"
                + (f", stage 2 ≤ {epochs} epochs)" if capped and epochs.isdigit()
                   else ")" if suite == "converged" or capped else ", each model to its own early stop)"),
        "measured_at": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": machine, "command": command,
        "setup": ("Variants differ in one setting each, on one stage 1 per protocol; the bench preset (dim 64, SASRec "
                  f"ids, exact softmax) with {long_len} older items from codes and 50 recent; stage 2's patience "
                  f"{patience} (our SASRec's {sasrec_patience or patience}), stage 2 capped at {epochs} epochs (our "
                  f"SASRec at {sasrec_cap}).{capped_note} "
                  + ("Window protocol: last 10 items of each user are the test set, the 10 before validate; coverage "
                     "labels: " + json.dumps(sorted({m.get('interest_labels', {}).get('source', '?')
                                                      for (p, _), m in got.items() if p == 'window'})) + ". "
                     if w else "")
                  + "Leave-one-out (LOO) rows: next-item NDCG@10 and Recall@10. Test numbers, but for the valid column: "
                  "the best validation score that early stopping followed (window: Recall@50, max merge; LOO: "
                  "NDCG@10); every choice was made on validation, the K ≥ 3 training too. Intervals: 95 % paired "
                  "bootstrap over the test users (bench/paired.py), where both runs kept their ranked lists."
                  + (" Rows in parentheses re-score a run's test users (diagnose): its interests' mean as one vector, "
                     "each interest alone (averaged over the K), and a soft merge ranking by max + λ × mean of the "
                     "interests' scores, λ in {0, 0.25, 0.5, 1, 2, 4} picked on validation Recall@50."
                     if diagnosed else "")
                  + (" Peer rows: the library's own settings at dim 64 and length 50, trained to the runner's early "
                     f"stop (patience {peer_patience} on validation NDCG@10, as each row's record says; no time "
                     "budget), its lists scored by our evaluator; "
                     "epochs = run (best)." if peers else "")
                  + (" The oracle and history-cluster rows train nothing: they rank by the max merge over the K = 1 "
                     "run's item vectors, with K unit directions that are the k-means centres of the user's own test "
                     "window (an upper bound: it knows the targets) or of the last 50 history items (a method)."
                     if headroom_path.is_file() else "")
                  + (" Which SASRec HyMiRec's id tables start from, and its dropout, are HyMiRec settings, chosen on "
                     "HyMiRec's validation NDCG@10 among the preset runs warm-started from each candidate SASRec "
                     "and its dropout candidates (one row each); our SASRec's row is the SASRec with the best "
                     "validation NDCG@10 among those runs' SASRecs (each a sweep point), whichever HyMiRec started "
                     "from." if warm else "")),
        "columns": columns,
        "rows": rows,
        "reading": reading_of(check_list),
        "checks": check_list,
    } | ({"converged": converged_summary(dataset_name, loo, peers, preset_dir, published_ndcg10(out), warm,
                                         scratch, text, sasrec)}
         if suite == "converged" else {})
