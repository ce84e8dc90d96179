"""GPU run: HyMiRec with the full SmolLM2-135M (all 30 layers) vs the same shape randomly initialised vs today's
small default backbone, on ML-100K and ML-1M, validation and test metrics as JSON (issue 25).

Per dataset, all on the bench preset (bench/methods.py: BENCH_PRESET, dim 64, length 50) and the same
seed: a full run with the default 2-layer, 128-wide Qwen2 (SASRec + its item table as stage 1, stage 2), then
stage 2 alone on that run's stage 1 with `hybrid.llm.path=smollm2`, pretrained and `llm_init=random` (full
fine-tune, backbone at --llm-lr). Items are learned ids, not text: only the `.inter` files travel, since the
content encoder's weights do not fit the transfer, as in tools/gpu_check.sh. Budgets bound every model
(train.max_train_seconds, checked at epoch ends) so that a call stays under --deadline seconds.

Where the project is set up (its venv, ../shared/data, .models/smollm2-135m): one command,
    .venv/bin/python bench/gpu_smollm2.py run --phase all --out OUT

On the lent GPU machine (stock PyTorch image; nothing reaches it but the checkout, at most 64 MiB a call) the
94 MiB GGUF does not fit one call, so it travels in two halves over two calls, the second within the machine's
30 s warm window (ignored files a call left in the checkout stay there while the machine is warm):
    .venv/bin/python bench/gpu_smollm2.py pack            # here: .gpu-llm/a (GGUF half + data), .gpu-llm/b
    run(carry=[".gpu-llm/a"], timeout_s=420,               # call 1: the default-backbone runs (SASRec, stage 1)
        command="PYTHONUNBUFFERED=1 python3 bench/gpu_smollm2.py run --phase base --out $OUT")
    run(carry=[".gpu-llm/b"], timeout_s=420,               # call 2, at once: convert, SmolLM2 runs
        command="PYTHONUNBUFFERED=1 python3 bench/gpu_smollm2.py run --phase llm --out $OUT")
Each call writes OUT/results.json (every run so far: valid best epoch's metrics, test metrics, seconds, epochs,
backbone size, peak GPU memory) and prints it. If call 2 finds a cold machine it says so and stops.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PACK = ROOT / ".gpu-llm"  # gitignored; travels by `carry`
WORK = PACK / "work"  # runs, data and the converted model on the GPU machine (kept while it is warm);
#   --smoke runs use PACK / "work-smoke", so a real run never takes a smoke run's records for its own
DATASETS = {"ml-100k": {"budget": 25.0, "epochs": 30}, "ml-1m": {"budget": 45.0, "epochs": 30}}
SEED = 0


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pack(shared_data: Path) -> None:
    """Here (project venv): split the wheel's GGUF into .gpu-llm/{a,b}, data (.inter only, gzip) into a, the gguf
    wheel (pure Python; transformers needs it to read a GGUF) into b."""
    from training.pretrained_llm import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    shutil.rmtree(PACK / "a", ignore_errors=True)
    shutil.rmtree(PACK / "b", ignore_errors=True)
    (PACK / "a" / "data").mkdir(parents=True)
    (PACK / "b" / "whl").mkdir(parents=True)
    blob = gguf.read_bytes()
    half = len(blob) // 2
    (PACK / "a" / "smollm2.gguf.part0").write_bytes(blob[:half])
    (PACK / "b" / "smollm2.gguf.part1").write_bytes(blob[half:])
    (PACK / "b" / "smollm2.gguf.json").write_text(json.dumps({"name": gguf.name, "bytes": len(blob),
                                                              "sha256": hashlib.sha256(blob).hexdigest()}))
    for name in DATASETS:
        source = shared_data / name / f"{name}.inter"
        with source.open("rb") as f, gzip.open(PACK / "a" / "data" / f"{name}.inter.gz", "wb", compresslevel=9) as g:
            shutil.copyfileobj(f, g)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "gguf==0.19.0",
                    "-d", str(PACK / "b" / "whl")], check=True)
    for part in ("a", "b"):
        size = sum(f.stat().st_size for f in (PACK / part).rglob("*") if f.is_file())
        print(f"{PACK / part}: {size / 2**20:.1f} MiB")


def _data_root(shared_data: Path, work: Path) -> Path:
    """The datasets: unpacked from .gpu-llm/a when it is there, else ../shared/data as it is."""
    packed = PACK / "a" / "data"
    if not packed.is_dir():
        return shared_data
    root = work / "data"
    for name in DATASETS:
        target = root / name / f"{name}.inter"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with gzip.open(packed / f"{name}.inter.gz", "rb") as g, target.open("wb") as f:
                shutil.copyfileobj(g, f)
    return root


def _smollm2_ready(work: Path, log) -> None:
    """Make `hybrid.llm.path=smollm2` resolve: the set-up folder if converted, else convert the travelled GGUF."""
    from training.pretrained_llm import MODELS_ENV, convert_smollm2, default_llm_dir, is_converted

    if is_converted(default_llm_dir()):
        return
    os.environ[MODELS_ENV] = str(work / "models")
    if is_converted(default_llm_dir()):
        return
    part0, part1, meta = PACK / "a" / "smollm2.gguf.part0", PACK / "b" / "smollm2.gguf.part1", PACK / "b" / "smollm2.gguf.json"
    if not part1.is_file():
        raise SystemExit(f"{part1} missing: carry .gpu-llm/b (made by `bench/gpu_smollm2.py pack`)")
    if not part0.is_file():
        raise SystemExit(f"{part0} missing: the machine was not warm any more (a fresh one is bare). Run call 1 "
                         "(carry .gpu-llm/a) again, then call 2 at once")
    try:
        import gguf  # noqa: F401
    except ImportError:
        site = work / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site),
                        *map(str, (PACK / "b" / "whl").glob("*.whl"))], check=True)
        sys.path.insert(0, str(site))
    info = json.loads(meta.read_text())
    gguf_path = work / info["name"]
    gguf_path.write_bytes(part0.read_bytes() + part1.read_bytes())
    if _sha256(gguf_path) != info["sha256"]:
        raise SystemExit(f"{gguf_path}: sha256 differs from the packed file's")
    convert_smollm2(gguf=gguf_path, log=log)


def _summary(metrics: dict, run_dir: Path) -> dict:
    """One run record: the best validation epoch's metrics (the model kept), test metrics, cost."""
    hymirec = metrics["hymirec"]
    best = max(hymirec["history"], key=lambda e: e["valid"]["NDCG@10"]) if hymirec["history"] else {}
    hybrid = metrics["config"]["hybrid"]
    record = {"run_dir": str(run_dir), "valid": best.get("valid"), "valid_best_epoch": best.get("epoch"),
              "test": hymirec["test"], "epochs": hymirec["epochs"], "train_seconds": round(hymirec["train_seconds"], 1),
              "seconds_per_epoch": round(hymirec["train_seconds"] / max(1, hymirec["epochs"]), 1),
              "inference_ms_per_user": round(hymirec["inference_ms_per_user"], 3),
              "backbone": {k: hybrid["llm"][k] for k in ("path", "init", "finetune", "keep_layers", "lr")},
              "total_seconds": round(metrics["total_seconds"], 1)}
    if "sasrec" in metrics:
        record["sasrec"] = {"test": metrics["sasrec"]["test"], "epochs": metrics["sasrec"]["epochs"],
                            "train_seconds": round(metrics["sasrec"]["train_seconds"], 1)}
    return record


def run(phase: str, out: Path, deadline: float, llm_lr: float, shared_data: Path, datasets: list[str],
        smoke: bool = False) -> int:
    import torch

    from bench.methods import bench_config, budget_overrides, stage2_only_overrides
    from training.train import run_training

    started = time.perf_counter()
    work = PACK / "work-smoke" if smoke else WORK
    out.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.json"
    work.mkdir(parents=True, exist_ok=True)
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"runs": {}, "skipped": []}
    log = print
    if torch.cuda.is_available():
        results["device"] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                             "cuda": torch.version.cuda, "python": sys.version.split()[0]}
    data_root = _data_root(shared_data, work)
    variants = {"default": []}
    if phase in ("llm", "all"):
        _smollm2_ready(work, log)
        variants = {"default": [], "smollm2": ["hybrid.llm.path=smollm2", "hybrid.llm.finetune=full",
                                               f"hybrid.llm.lr={llm_lr}"],
                    "smollm2-random": ["hybrid.llm.path=smollm2", "hybrid.llm.init=random",
                                       "hybrid.llm.finetune=full", f"hybrid.llm.lr={llm_lr}"]}
    for name in datasets:
        spec = DATASETS[name]
        base_dir = work / "runs" / name / "default"
        for variant, extra in variants.items():
            key = f"{name}/{variant}"
            if key in results["runs"]:
                continue  # done by an earlier call on this machine
            # the base run trains SASRec and the stage-2 default model (2 budgets); the others stage 2 only
            need = (2 if variant == "default" else 1) * spec["budget"] + 40
            left = deadline - (time.perf_counter() - started)
            if left < need:
                results["skipped"].append({"run": key, "seconds_left": round(left), "needed": need})
                log(f"[gpu] skipping {key}: {left:.0f} s left of the deadline, {need:.0f} s needed")
                continue
            overrides = budget_overrides(spec["epochs"], spec["budget"]) + [
                f"train.seed={SEED}", "train.device=cuda" if torch.cuda.is_available() else "train.device=cpu"]
            if variant != "default":
                overrides += stage2_only_overrides(base_dir) + extra
            if smoke:  # a CPU check of the whole path in minutes: one epoch of final windows, SmolLM2 cut to 1 layer
                overrides += ["train.epochs=1", "train.sasrec_epochs=1", "train.samples_per_user=0",
                              "train.max_eval_users=200"] + (["hybrid.llm.keep_layers=1"] if variant != "default" else [])
            run_dir = work / "runs" / name / variant
            config = bench_config(str(data_root / name), run_dir, overrides)
            log(f"[gpu] {key}: {' '.join(overrides)}")
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            metrics = run_training(config, progress=False, log=log)
            record = _summary(metrics, run_dir)
            if torch.cuda.is_available():
                record["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            results["runs"][key] = record
            results_path.write_text(json.dumps(results, indent=1))
            shutil.copy(results_path, out / "results.json")
            log(f"[gpu] {key}: {json.dumps(record)}")
    results["call_seconds"] = round(time.perf_counter() - started, 1)
    results_path.write_text(json.dumps(results, indent=1))
    shutil.copy(results_path, out / "results.json")
    print(json.dumps(results, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="here: the two transfer folders .gpu-llm/a and .gpu-llm/b")
    p.add_argument("--shared-data", type=Path, default=ROOT.parent / "shared" / "data")
    r = sub.add_parser("run", help="on the GPU machine")
    r.add_argument("--phase", choices=("base", "llm", "all"), default="all",
                   help="base: default-backbone runs only; llm: + SmolLM2 pretrained and random (base runs first if missing)")
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-smollm2-out")))
    r.add_argument("--deadline", type=float, default=330.0, help="seconds this call may train; later runs are skipped")
    r.add_argument("--llm-lr", type=float, default=1e-4, help="learning rate of the SmolLM2 backbone (not tuned)")
    r.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    r.add_argument("--shared-data", type=Path, default=ROOT.parent / "shared" / "data")
    r.add_argument("--smoke", action="store_true", help="CPU check of the path: 1 epoch, final windows, 1 LLM layer")
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args.shared_data)
        return 0
    return run(args.phase, args.out, args.deadline, args.llm_lr, args.shared_data, args.datasets, args.smoke)


if __name__ == "__main__":
    raise SystemExit(main())
