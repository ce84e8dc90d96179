"""Our SASRec's settings, chosen on validation (issue 26): a small grid, every point to its own early stop.

    python -m bench.sasrec_sweep run --dataset ../shared/data/ml-100k --out runs/sweep100k
    python -m bench.sasrec_sweep run --dataset ../shared/data/ml-1m --max-users 1000 --out runs/sweep1m
    python -m bench.sasrec_sweep report --out runs/sweep100k --out runs/sweep1m --record bench/records/sasrec-sweep.json

The baseline HyMiRec is measured against, and warm-started from, should be as good as its own settings allow, not
as good as our defaults happen to be. The grid is what the SASRec paper and RecBole use: dropout 0.2 (the paper's
ML-1M value, our default) or 0.5 (the paper's sparse Amazon sets, RecBole's default), learning rate 1e-3 (both)
or 2e-3 (for the cut datasets' few steps per epoch); batch 128 (the paper). Every point trains on the same
leave-one-out split, to its patience on validation NDCG@10 (epoch cap 1,000; the record says if it bound); the
point with the best validation score is chosen, and test numbers are only reported. Resumable: a point already in
OUT is skipped, and with ``--pause-after S`` a point still training at S seconds is checkpointed (OUT/<point>.ckpt,
exit 75) and the same command resumes it: Beauty's points take an hour or more each on one CPU core.
``--set input_norm=true`` (or another LAYOUT setting) trains the grid with RecBole's layout choices into the same
OUT, where both layouts compete in one choice; ``--grid lr=0.001`` narrows an axis.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import product
from pathlib import Path

GRID = {"dropout": (0.2, 0.5), "lr": (1e-3, 2e-3), "batch_size": (128,)}
# --set: RecBole's layout choices, fixed for a whole sweep (train_stride: every target seen with a long context,
# as RecBole's prefixes are)
LAYOUT = ("attn_dropout", "post_ln", "input_norm", "train_stride", "positions_from_start")
LAYOUT_MEANING = {  # what a point name's layout part means (the record's setup says it)
    "attn_dropout": "RecBole's attention dropout", "post_ln": "post-LN blocks (RecBole's)",
    "input_norm": "LayerNorm on the summed input embeddings, N(0, 0.02) init (RecBole's)",
    "train_stride": ("training windows overlap by 50 - S items (S the stride) and the loss counts each window's "
                     "last S labels, so every target is predicted from at least 51 - S earlier items (RecBole "
                     "predicts each from its whole prefix)"),
    "positions_from_start": ("position 0 is each window's oldest item (RecBole's count), not counted back from the "
                             "newest item")}
PATIENCE, EPOCH_CAP = 10, 1000  # patience 50 ran one ML-100K point into a cap of 300


def default_point() -> dict:
    """The grid's settings as SASRecConfig sets them by default (what the converged runs' SASRec uses)."""
    from training.sasrec import SASRecConfig

    return {key: getattr(SASRecConfig(), key) for key in GRID}


def trained_patience(result: dict) -> int:
    """The patience a finished point trained with (points made before it was recorded used PATIENCE)."""
    return result.get("patience", PATIENCE)


def parse_layout(settings: list[str], flag: str = "--set") -> dict:
    """``--set attn_dropout=0.5 --set post_ln=true`` → {"attn_dropout": 0.5, "post_ln": True}, typed as in
    SASRecConfig."""
    from training.sasrec import SASRecConfig

    layout = {}
    for setting in settings:
        key, _, value = setting.partition("=")
        if key not in LAYOUT or not value:
            raise SystemExit(f"{flag} {setting!r}: expected KEY=VALUE with KEY one of {', '.join(LAYOUT)}")
        kind = type(getattr(SASRecConfig(), key))
        if kind is bool and value.lower() not in ("true", "false"):
            raise SystemExit(f"{flag} {setting!r}: {key} is true or false")
        try:
            layout[key] = value.lower() == "true" if kind is bool else kind(value)
        except ValueError:
            raise SystemExit(f"{flag} {setting!r}: {key} takes a number") from None
    # one order, and no default values (attn_dropout=0 is our layout), so one model has one point name
    return {key: layout[key] for key in LAYOUT if key in layout and layout[key] != getattr(SASRecConfig(), key)}


def point_name(point: dict) -> str:
    layout = "".join(f"-{key}" if value is True else f"-{key}{value:g}" for key, value in point.items()
                     if key in LAYOUT)  # parse_layout keeps only settings that differ from ours
    return f"dropout{point['dropout']}-lr{point['lr']:g}-batch{point['batch_size']}{layout}"


def summary_order(point: dict) -> tuple[str, int]:
    """Our layout's points first, then each other layout's; within one, the grid's order."""
    base = point_name({key: point[key] for key in GRID})
    names = [point_name(dict(zip(GRID, values))) for values in product(*GRID.values())]
    return point_name(point)[len(base):], names.index(base) if base in names else 0


def run_point(data, split, point: dict, seed: int = 0, patience: int = PATIENCE,
              checkpoint: Path | None = None, pause_after: float | None = None,
              weights: Path | None = None) -> dict | None:
    """One grid point to its own early stop → its validation curve's best and its test metrics (None: paused
    into ``checkpoint`` after ``pause_after`` seconds; the same call resumes it). ``weights``: the trained model is
    saved there (training.sasrec.save_trained), so a run with the same settings loads it rather than training it
    again (train.sasrec_weights; bench.mechanisms run --sasrec-from)."""
    from training.sasrec import SASRecConfig, evaluate_sasrec, save_trained, train_sasrec

    config = SASRecConfig(patience=patience, epochs=EPOCH_CAP, seed=seed, **point)
    model, info = train_sasrec(split.train, data.n_items, split.valid, config, progress=False,
                               log=lambda line: print(f"[{point_name(point)}] {line}", flush=True),
                               checkpoint=checkpoint, pause_after=pause_after)
    if info.get("paused"):
        return None
    scores = [e["valid"]["NDCG@10"] for e in info["epochs"]]
    if weights is not None:
        save_trained(weights, model, config, data.n_items, info)
    return {"point": point, "valid_ndcg10": info["best_valid_ndcg10"], "test": evaluate_sasrec(model, split.test),
            "epochs": len(scores), "best_epoch": 1 + scores.index(max(scores)),
            "early_stopped": len(scores) < EPOCH_CAP, "patience": patience,
            "valid_curve": [round(score, 5) for score in scores],  # every epoch's, to set beside a peer's curve
            "train_seconds": round(sum(e["seconds"] for e in info["epochs"]), 1)}  # every call's epochs, if resumed


def parse_grid(settings: list[str]) -> dict:
    """``--grid lr=0.001 --grid dropout=0.5,0.2`` → GRID with those axes narrowed (a slow dataset's sweep)."""
    grid = dict(GRID)
    for setting in settings:
        key, _, values = setting.partition("=")
        if key not in GRID or not values:
            raise SystemExit(f"--grid {setting!r}: expected KEY=V1[,V2...] with KEY one of {', '.join(GRID)}")
        try:
            grid[key] = tuple(type(GRID[key][0])(value) for value in values.split(","))
        except ValueError:
            raise SystemExit(f"--grid {setting!r}: {key} takes numbers like {GRID[key][0]}") from None
    return grid


def sweep(dataset: str, out: Path, name: str, seed: int = 0, first: str | None = None,
          patience: int = PATIENCE, pause_after: float | None = None, layout: dict | None = None,
          grid_axes: dict | None = None) -> dict | None:
    """Every grid point, each with the ``layout`` settings (``first``, a point name, trains first: on a slow set
    the likeliest point lands early); the choice is made over every finished point in ``out`` of this patience, so
    sweeps of several layouts into one OUT choose among all of them. None when ``pause_after`` seconds ran out with
    a point checkpointed (the same call resumes it)."""
    from training.data import leave_one_out
    from training.train import load_run_data

    axes = grid_axes or GRID
    points = [{**dict(zip(axes, values)), **(layout or {})} for values in product(*axes.values())]
    grid = [point_name(p) for p in points]  # the grid's order, kept in the summary
    if first is not None:
        if first not in grid:
            raise SystemExit(f"--first {first!r} is not a grid point; the grid: {grid}")
        points.sort(key=lambda p: point_name(p) != first)
    data = load_run_data(dataset)
    split = leave_one_out(data)
    out.mkdir(parents=True, exist_ok=True)
    results, started = [], time.perf_counter()
    for point in points:
        path = out / f"{point_name(point)}.json"
        result = json.loads(path.read_text()) if path.is_file() else None  # resumable: finished points stay
        if result is not None and trained_patience(result) != patience:
            raise SystemExit(f"{path} was trained with patience {trained_patience(result)}, not {patience}: "
                             f"a sweep under another patience needs its own --out")
        if result is None or (not result["early_stopped"] and result["epochs"] < EPOCH_CAP):  # new, or a lower cap bound
            ckpt = out / f"{point_name(point)}.ckpt"
            left = None if pause_after is None else max(0.0, pause_after - (time.perf_counter() - started))
            result = run_point(data, split, point, seed, patience, ckpt, left, weights_path(out, point))
            if result is None:
                print(f"[sasrec_sweep] paused in {point_name(point)}: the same command resumes it", flush=True)
                return None
            path.write_text(json.dumps(result, indent=2))
            ckpt.unlink(missing_ok=True)
        results.append(result)
    for path in sorted(out.glob("*.json")):  # points of another layout (--set) in this OUT compete too
        other = json.loads(path.read_text()) if path.name != "sweep.json" and path.stem not in grid else None
        if other is not None and trained_patience(other) == patience:
            results.append(other)
    results.sort(key=lambda r: summary_order(r["point"]))  # one order, whatever ran first
    chosen = max(results, key=lambda r: r["valid_ndcg10"])
    summary = {"dataset": name, "users": len(data.sequences), "seed": seed, "points": results,
               "chosen": chosen["point"]}
    (out / "sweep.json").write_text(json.dumps(summary, indent=2))
    print(f"[sasrec_sweep] {name}: chosen on validation {point_name(chosen['point'])}: test NDCG@10 "
          f"{chosen['test']['NDCG@10']:.4f}", flush=True)
    return summary


def weights_path(out: Path, point: dict) -> Path:
    """Where a finished point's trained model is kept (points finished before weights were kept have none)."""
    return out / f"{point_name(point)}.pt"


def finished_sweep(sweep_out: Path) -> dict:
    """OUT/sweep.json of a finished sweep: its dataset, every point's scores and the point chosen on validation."""
    path = Path(sweep_out) / "sweep.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run `python -m bench.sasrec_sweep run --out {sweep_out} ...` first")
    return json.loads(path.read_text())


def chosen_overrides(sweep_out: Path, dataset: str, layout: dict | None = None, weights: bool = False) -> list[str]:
    """The run-config overrides (train.sasrec_*) of the point a finished sweep chose on validation, for a run on
    the same data: the sweep's own dataset, or the same user cut (OUT/data/<name> of both). ``layout``
    (:func:`parse_layout`; {} = our own): the best point on validation among that layout's only. ``weights``: also
    the point's trained model where the sweep kept it (train.sasrec_weights; leave-one-out runs only), so the run
    loads the very model the sweep scored instead of training it again."""
    summary = finished_sweep(sweep_out)
    name = Path(dataset).name
    if summary["dataset"] != name and not (sweep_out / "data" / name).is_dir():
        raise SystemExit(f"the sweep in {sweep_out} ran on {summary['dataset']!r}, not on {name!r}: its choice "
                         f"does not carry over")
    chosen = summary["chosen"]
    if layout is not None:
        points = [r for r in summary["points"] if {k: v for k, v in r["point"].items() if k in LAYOUT} == layout]
        if not points:
            raise SystemExit(f"the sweep in {sweep_out} trained no point with the layout {layout or 'of our own'}")
        chosen = max(points, key=lambda r: r["valid_ndcg10"])["point"]
    # the patience and cap it was chosen under, so the run trains the very model the sweep scored
    patience = next(trained_patience(r) for r in summary["points"] if r["point"] == chosen)
    kept = weights_path(Path(sweep_out), chosen)
    loaded = [f"train.sasrec_weights={kept.resolve()}"] if weights and kept.is_file() else []
    return loaded + [f"train.sasrec_dropout={chosen['dropout']}", f"train.sasrec_lr={chosen['lr']}",
                     f"train.sasrec_batch_size={chosen['batch_size']}", f"train.sasrec_patience={patience}",
                     f"train.sasrec_epochs={EPOCH_CAP}"] + [f"train.sasrec_{key}={json.dumps(chosen[key])}"
                                                            for key in LAYOUT if key in chosen]


def report(outs: list[Path], command: str, machine: str, part: str = "") -> dict:
    """One row per grid point, one column per dataset: validation / test NDCG@10 and epochs; the chosen in bold.
    ``part``: a sweep recorded apart from the main one (another make target) names itself in its area: "(Games)"."""
    summaries = [finished_sweep(out) for out in outs]
    # the patience the points ran with; a column per sweep, named by its patience too where sweeps ran with several
    runs_with = [sorted({trained_patience(r) for r in s["points"]}) for s in summaries]
    patience = "/".join(str(x) for x in sorted({p for ps in runs_with for p in ps}))
    labels = [s["dataset"] + (f", patience {'/'.join(map(str, ps))}" if "/" in patience else "")
              for s, ps in zip(summaries, runs_with)]
    capped = [f"{label} {point_name(r['point'])}" for s, label in zip(summaries, labels) for r in s["points"]
              if not r["early_stopped"]]
    cap = f"cap {EPOCH_CAP} epochs, " + (f"bound for {', '.join(capped)}" if capped else "never bound")
    rows, readings, default_settings = {}, [], default_point()
    for column, (summary, label) in enumerate(zip(summaries, labels)):
        default = next((r for r in summary["points"] if r["point"] == default_settings), None)  # none: a --set sweep
        chosen = next(r for r in summary["points"] if r["point"] == summary["chosen"])
        for r in summary["points"]:
            cell = f"{r['valid_ndcg10']:.4f} / {r['test']['NDCG@10']:.4f}, {r['epochs']} ({r['best_epoch']})"
            name = point_name(r["point"]) + (" (default)" if r is default else "")
            rows.setdefault(name, ["—"] * len(summaries))[column] = f"**{cell}**" if r is chosen else cell
        versus = "" if default is None else (
            f" vs the default's {default['test']['NDCG@10']:.4f} "
            f"({100 * (chosen['test']['NDCG@10'] / default['test']['NDCG@10'] - 1):+.1f} %)")
        readings.append(f"{label}: chosen {point_name(chosen['point'])}, test NDCG@10 "
                        f"{chosen['test']['NDCG@10']:.4f}{versus}")
    return {
        "area": "SASRec (ours): settings chosen on validation, each to its own early stop" + (f" ({part})" if part else ""),
        "measured_at": time.strftime("%Y-%m-%d", time.gmtime()), "machine": machine, "command": command,
        "setup": (f"Leave-one-out, full ranking, history masked; dim 64, 2 layers, length 50, full-softmax CE on "
                  f"every position; patience {patience} on validation NDCG@10 ({cap}); " + (
                      "a row named with a layout setting trains with it: "
                      + "; ".join(f"{key}: {meaning}" for key, meaning in LAYOUT_MEANING.items()
                                  if any(key in row for row in rows)) + "; "
                      if any(len(row) > len(point_name(default_settings)) for row in rows) else "") +
                  "one seed; — : not trained on that dataset (a slow one sweeps part of the grid). Cells: "
                  "validation / test NDCG@10, epochs run (best); the point with the best validation score is chosen "
                  "(bold); test numbers are reported only."),
        "columns": ["dropout / lr / batch"] + labels,
        "rows": [[name] + cells for name, cells in rows.items()], "reading": "; ".join(readings),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=["run", "report"])
    parser.add_argument("--dataset", help="run: the dataset")
    parser.add_argument("--max-users", type=int, default=None, help="run: the mechanisms bench's user cut (seed 0)")
    parser.add_argument("--out", type=Path, action="append", required=True, help="run: one; report: several")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patience", type=int, default=PATIENCE, help="run: early stopping's patience (epochs)")
    parser.add_argument("--pause-after", type=float, default=None,
                        help="run: checkpoint the point in training at the first epoch end past S seconds (exit 75)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"run: a layout setting for every point ({', '.join(LAYOUT)}), e.g. post_ln=true")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help=f"run: narrow one grid axis ({', '.join(GRID)}), e.g. lr=0.001 on a slow dataset")
    parser.add_argument("--first", help="run: the grid point to train first (e.g. dropout0.5-lr0.001-batch128)")
    parser.add_argument("--record", help="report: write the record here")
    parser.add_argument("--amend", help="report: add the --out sweeps' points to this record's columns of the same "
                        "dataset and patience, and re-choose there (for points trained after the other runs are gone)")
    parser.add_argument("--part", default="", help="report: a sweep recorded apart names itself in the area (Games)")
    parser.add_argument("--command", default="python -m bench.sasrec_sweep run ...")
    parser.add_argument("--machine", default="development machine kind (2 CPU cores, 24 GiB, no GPU)")
    args = parser.parse_args(argv)
    if args.step == "run":
        if not args.dataset or len(args.out) != 1:
            parser.error("run needs --dataset and one --out")
        dataset, name = args.dataset, Path(args.dataset).name
        if args.max_users:
            from bench.mechanisms import subsample_users

            dataset = subsample_users(args.dataset, args.out[0], args.max_users)
            name += f", {args.max_users:,} random users"
        summary = sweep(dataset, args.out[0], name, args.seed, args.first, args.patience, args.pause_after,
                        parse_layout(args.set), parse_grid(args.grid))
        return 0 if summary is not None else 75  # 75: paused with a checkpoint; run the same command again
    if args.amend:
        from bench.record_amend import add_sweep_points, amend_file

        def amend(record: dict) -> list[str]:
            return [add_sweep_points(record, finished_sweep(out)) for out in args.out]

        try:
            print("amended:", ", ".join(amend_file(Path(args.amend), amend)), file=sys.stderr)
        except ValueError as error:
            parser.error(f"--amend: {error}")
        return 0
    from bench.results_page import emit_area_record

    emit_area_record(report(args.out, args.command, args.machine, args.part), args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
