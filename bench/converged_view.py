"""The converged view of one dataset (the results page's "converged view" row, bench/results_page.converged_section):
HyMiRec, our SASRec and the peer libraries, each to its own early stop, and HyMiRec against the strongest of the others.

Every choice in it is made on validation: which warm start and dropout HyMiRec uses (:func:`hymirec_choice`), which
SASRec is ours (:func:`sasrec_choice`), which learning rate the ids-from-scratch and text-only runs use
(:func:`validated_choice`). Test numbers are only reported. bench/mechanisms_report.report calls it for
``--suite converged``.
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.mechanism_variants import BASE, HYMIREC_CANDIDATES, SCRATCH_CANDIDATES, TEXT_CANDIDATES
from bench.paired import format_gain, peer_gain_interval, run_gain_interval
from bench.peers.converged import PEER_PATIENCE
from bench.peers.run_state import holds_checkpoint


def run_metrics(out: Path, protocol: str, variant: str) -> dict | None:
    """OUT/<protocol>/<variant>/metrics.json of a finished run, or None."""
    path = out / protocol / variant / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def finished_peers(out: Path) -> dict[str, dict]:
    """OUT/leave_one_out/peers/<name>/metrics.json of every finished peer run (a paused one holds a checkpoint, and
    any scores beside it are an earlier run's)."""
    root = out / "leave_one_out" / "peers"
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob("*/metrics.json"))
            if not holds_checkpoint(p.parent)}


def published_ndcg10(out: Path) -> dict[str, float]:
    """Published NDCG@10 per model (bench/datasets.PUBLISHED: S3-Rec's table) for the very file the run's peer
    split came from (same name, users and items), else nothing: a check that our harness runs a library right."""
    from bench.datasets import PUBLISHED

    manifest = out / "leave_one_out" / "peers" / "split" / "manifest.json"
    split = json.loads(manifest.read_text()) if manifest.is_file() else {}
    users, entry = (split.get("n_users"), split.get("n_items")), PUBLISHED.get(split.get("dataset"))
    return {model: ndcg for model, (_, ndcg) in entry[1].items()} if entry and entry[0] == users else {}


def peer_model_entry(peer: dict, published: dict[str, float]) -> dict:
    """The converged view's entry for one peer: test NDCG@10, epochs run, and what sets it apart from the view's rule
    (capped by its epoch limit, a longer patience, the published number for these files)."""
    entry = {"NDCG@10": peer["test"]["NDCG@10"], "epochs": peer["epochs"]}
    if not peer.get("early_stopped", True):
        entry["capped"] = True
    if peer.get("patience", PEER_PATIENCE) != PEER_PATIENCE:  # the view's rule; a longer one shows in the cell
        entry["patience"] = peer["patience"]
    reference = published.get(peer["label"].split(" (")[0])
    if reference:
        entry["published"] = reference
    return entry


def sasrec_settings(run: dict) -> str:
    """"dropout 0.5, lr 0.001, batch 128, input_norm": the settings of the SASRec a run trained (its layout settings
    named when on); runs made before a setting existed used SASRecConfig's defaults, which have not changed since."""
    from bench.sasrec_sweep import LAYOUT
    from training.sasrec import SASRecConfig

    train = {"sasrec_dropout": SASRecConfig.dropout, "sasrec_lr": SASRecConfig.lr,
             "sasrec_batch_size": SASRecConfig.batch_size, **run.get("config", {}).get("train", {})}
    layout = {key: train[f"sasrec_{key}"] for key in LAYOUT if train.get(f"sasrec_{key}")}
    return (f"dropout {train['sasrec_dropout']}, lr {train['sasrec_lr']:g}, batch {train['sasrec_batch_size']}"
            + "".join(f", {key}" + ("" if value is True else f" {value}") for key, value in layout.items()))


def candidate_name(metrics: dict, variant: str) -> str:
    """How a candidate for HyMiRec's preset is named: by its warm start, its dropout where it is a dropout
    variant, its training stride where it trains on strided cuts, and its LLM backbone where it loads a pretrained
    model's shape (HYMIREC_CANDIDATES)."""
    hybrid = metrics.get("config", {}).get("hybrid", {})
    llm = hybrid.get("llm", {})
    dropout, stride = llm.get("input_dropout"), hybrid.get("train_stride", 0)
    backbone = ""
    if llm.get("path"):
        layers = f"first {llm['keep_layers']} layers" if llm.get("keep_layers") else "all layers"
        trains = "" if llm.get("finetune", "full") == "full" else f", {llm['finetune']}"  # "lora" | "frozen"
        backbone = f"; LLM {Path(llm['path']).name} ({layers}, {llm.get('init', 'pretrained')}{trains})"
    return (f"warm start: SASRec {sasrec_settings(metrics)}"
            + (f"; dropout {dropout}" if variant != BASE["leave_one_out"] and dropout else "")
            + (f"; cuts every {stride} items" if stride else "") + backbone)


def hymirec_choice(out: Path, others: list[Path]) -> dict | None:
    """HyMiRec's warm-start SASRec and its dropout are settings of HyMiRec's, chosen on its validation: among the
    preset runs of OUT and of ``others`` (each warm-started from the SASRec its own base run trained, on the same
    split) and their dropout candidates (HYMIREC_CANDIDATES, stage 2 alone on that preset's SASRec), the one with the
    best HyMiRec validation score. None where OUT has no candidate beside its preset and no ``others`` are given.
    → {"chosen": run, "candidates": [run, ...]}, run = {"dir", "metrics", "name"} (OUT's preset first)."""
    runs = []

    def add(root: Path, variant: str, must: bool) -> None:
        metrics = run_metrics(root, "leave_one_out", variant)
        if metrics is None or (variant == BASE["leave_one_out"] and "sasrec" not in metrics):
            if must:
                raise SystemExit(f"--warm-start-from {root}: no finished preset run with its SASRec in "
                                 f"{root / 'leave_one_out' / BASE['leave_one_out']}")
            return
        if runs and (metrics.get("dataset"), metrics["hymirec"]["test"].get("users")) != (
                runs[0]["metrics"].get("dataset"), runs[0]["metrics"]["hymirec"]["test"].get("users")):
            raise SystemExit(f"--warm-start-from {root}: another dataset or split than {out}'s")
        runs.append({"dir": root / "leave_one_out" / variant, "metrics": metrics,
                     "name": candidate_name(metrics, variant)})

    for root in [out, *others]:
        add(root, BASE["leave_one_out"], must=bool(others))
        for variant in HYMIREC_CANDIDATES:
            add(root, variant, must=False)
    if len(runs) < 2:
        return None
    return {"chosen": max(runs, key=lambda r: _valid_best(r["metrics"])), "candidates": runs}


def sasrec_choice(out: Path, others: list[Path]) -> tuple[dict, Path] | None:
    """Our SASRec as chosen on its own validation: among the preset runs of OUT and of ``others`` (each trained the
    SASRec of one sweep point, on the same split), the one whose SASRec validated highest (OUT's on a tie) →
    (its metrics.json, its run dir, which holds the SASRec's ranked lists). A sweep point that wins only after the
    converged runs were made thus becomes "SASRec (ours)" once a run has trained it, beside the older runs."""
    runs = []
    for root in [out, *others]:
        metrics = run_metrics(root, "leave_one_out", BASE["leave_one_out"])
        if metrics and "sasrec" in metrics:
            runs.append((metrics, root / "leave_one_out" / BASE["leave_one_out"]))
    # max keeps the first of equals: OUT's, also where runs made before SASRec recorded its validation compete
    return max(runs, key=lambda run: run[0]["sasrec"].get("valid_best_ndcg10", float("-inf"))) if runs else None


def validated_choice(loo: dict, candidates: tuple[str, ...]) -> str | None:
    """Which of the trained ``candidates`` validated highest: SCRATCH_CANDIDATES (ids from scratch at the preset's
    learning rate or SASRec's), TEXT_CANDIDATES (items from text alone, the same two rates)."""
    trained = [v for v in candidates if v in loo]
    return max(trained, key=lambda v: _valid_best(loo[v])) if len(trained) > 1 else (trained or [None])[0]


def _valid_best(run: dict) -> float:
    """HyMiRec's best validation score in a run's metrics (runs before the window protocol named it
    valid_best_ndcg10)."""
    hymirec = run["hymirec"]
    return hymirec["valid_best"] if hymirec.get("valid_best") is not None else hymirec["valid_best_ndcg10"]


def gain_percent(gain: float, low: float | None, high: float | None) -> dict:
    """(0.0497, None, None) → {"gain": 4.97, "low": None, "high": None}: the page plot's numbers, in %."""
    return {key: None if value is None else round(100 * value, 2)
            for key, value in zip(("gain", "low", "high"), (gain, low, high))}


def converged_summary(dataset_name: str, loo: dict, peers: dict, preset_dir: Path,
                      published: dict[str, float] | None = None, warm: dict | None = None,
                      scratch: str | None = None, text: str | None = None,
                      sasrec: tuple[dict, Path] | None = None) -> dict:
    """The page's converged view of one dataset (bench/results_page.converged_section): every model's test NDCG@10
    and epochs, and HyMiRec against the strongest other model (our SASRec or a peer library's), with its interval
    where both kept their ranked lists. A peer whose model has a published number for these files gets its share
    of it. ``warm`` (:func:`hymirec_choice`): HyMiRec is the run whose warm start validation chose. ``sasrec``
    (:func:`sasrec_choice`): our SASRec's run and dir, chosen on SASRec's own validation, whichever HyMiRec started
    from (default: OUT's preset). ``scratch``, ``text`` (:func:`validated_choice`): the ids-from-scratch and the
    text-only run validation chose."""
    sasrec_run, sasrec_dir = sasrec or (loo.get("preset", {}), preset_dir)
    models: dict[str, dict] = {}
    hymirec_runs = {**loo, "preset": warm["chosen"]["metrics"]} if warm and "preset" in loo else loo
    hymirec_dir = warm["chosen"]["dir"] if warm else preset_dir
    for variant, label in (("preset", "HyMiRec"), (scratch, "HyMiRec, ids from scratch"),
                           (text, "HyMiRec, text only (no id tables)")):
        if variant in hymirec_runs:
            run = hymirec_runs[variant]
            models[label] = {"NDCG@10": run["hymirec"]["test"]["NDCG@10"], "epochs": run["hymirec"].get("epochs")}
            train = run.get("config", {}).get("train", {})
            patience = train.get("patience", PEER_PATIENCE)
            if models[label]["epochs"] is not None and models[label]["epochs"] >= train.get("epochs", 10 ** 9):
                models[label]["capped"] = True  # ran into its epoch cap: not its own early stop
            if patience != PEER_PATIENCE:  # the view's rule; a longer one shows in the cell
                models[label]["patience"] = patience
            if run.get("item_representation", {}).get("kind") == "item_id_embedding":
                # no item text: stage 1 is SASRec's id table, so even "ids from scratch" starts from SASRec's items
                models[label]["settings"] = "items: our SASRec's id table (no item text)"
    for chosen, candidates, label in ((scratch, SCRATCH_CANDIDATES, "HyMiRec, ids from scratch"),
                                      (text, TEXT_CANDIDATES, "HyMiRec, text only (no id tables)")):
        rivals = [v for v in candidates if v in loo and v != chosen]
        if rivals and label in models:
            lr = loo[chosen].get("config", {}).get("train", {}).get("lr")
            chose = (f"lr {lr:g}, chosen on validation ({_valid_best(loo[chosen]):.4f} vs "
                     + ", ".join(f"{_valid_best(loo[v]):.4f}" for v in rivals) + ")")
            models[label]["settings"] = "; ".join(filter(None, [models[label].get("settings"), chose]))
    if warm and "HyMiRec" in models:
        others = ", ".join(f"{_valid_best(r['metrics']):.4f}" for r in warm["candidates"] if r is not warm["chosen"])
        models["HyMiRec"]["settings"] = (f"{warm['chosen']['name']}, chosen on HyMiRec's "
                                         f"validation ({_valid_best(warm['chosen']['metrics']):.4f} vs {others})")
    if "sasrec" in sasrec_run:
        train = sasrec_run.get("config", {}).get("train", {})
        models["SASRec (ours)"] = {"NDCG@10": sasrec_run["sasrec"]["test"]["NDCG@10"],
                                   "epochs": sasrec_run["sasrec"].get("epochs"),
                                   "settings": sasrec_settings(sasrec_run)}
        if (models["SASRec (ours)"]["epochs"] or 0) >= train.get("sasrec_epochs", 10 ** 9):
            models["SASRec (ours)"]["capped"] = True
        if train.get("sasrec_patience", PEER_PATIENCE) != PEER_PATIENCE:
            models["SASRec (ours)"]["patience"] = train["sasrec_patience"]
    for peer in peers.values():
        models[peer["label"]] = peer_model_entry(peer, published or {})
    others = {label: m["NDCG@10"] for label, m in models.items() if not label.startswith("HyMiRec")}
    strongest = max(others, key=others.get) if others else None
    gain = None  # (gain, low, high) as fractions; low/high None where no paired lists exist
    if strongest and "HyMiRec" in models:
        if strongest == "SASRec (ours)":  # both lists kept by the runs, on one split: a paired interval
            gain = run_gain_interval(hymirec_dir, sasrec_dir, "hymirec", "sasrec")
        else:  # a peer's lists, paired with HyMiRec's by user where both ranked the same split
            peer_dir = next((preset_dir.parent / "peers" / name for name, peer in peers.items()
                             if peer["label"] == strongest), None)
            gain = peer_gain_interval(hymirec_dir, peer_dir, preset_dir.parent / "peers" / "split") if peer_dir else None
        if gain is None and others[strongest]:
            gain = (models["HyMiRec"]["NDCG@10"] / others[strongest] - 1, None, None)
    summary = {"dataset": dataset_name, "models": models, "strongest": strongest,
               "vs_strongest": format_gain(*gain) if gain else "–"}
    if gain is not None:  # the numbers behind the text, in %, for the page's plot (bench/converged_plot.py)
        summary["vs_strongest_pct"] = gain_percent(*gain)
    return summary
