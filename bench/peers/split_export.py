"""Write our leave-one-out split in the peer file protocol (docs/peers.md).

    python -m bench.peers.split_export DATASET OUT_DIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from core.artifacts import write_json_atomic

SPLIT_FORMAT = "hymirec-peer-split/1"
HEADER = "user_id\titem_id\ttimestamp\n"


def _write_rows(path: Path, rows) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as f:
        f.write(HEADER)
        for user, item, position in rows:
            f.write(f"{user}\t{item}\t{position}\n")
    tmp.replace(path)  # a reader never sees a half-written file


def export_split(data, split, out_dir: str | Path) -> Path:
    """data: InteractionData, split: its `leave_one_out` Split → the protocol's four files in out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_rows(out / "train.tsv", ((u, int(i), p) for u, seq in enumerate(split.train) for p, i in enumerate(seq)))
    # valid/test targets sit right after the user's training items (positions len(train), len(train)+1).
    _write_rows(out / "valid.tsv", ((int(u), int(t), len(split.train[u])) for u, t in zip(split.valid.users, split.valid.targets)))
    _write_rows(out / "test.tsv", ((int(u), int(t), len(split.train[u]) + 1) for u, t in zip(split.test.users, split.test.targets)))
    write_json_atomic(out / "manifest.json", {"format": SPLIT_FORMAT, "dataset": data.name,
                                               "n_users": len(data.sequences), "n_items": int(data.n_items)})
    return out


def main(argv: list[str] | None = None) -> int:
    from training.data import leave_one_out
    from training.train import load_run_data

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m bench.peers.split_export DATASET OUT_DIR", file=sys.stderr)
        return 2
    data = load_run_data(args[0])
    out = export_split(data, leave_one_out(data), args[1])
    print(json.dumps({"split": str(out), "users": len(data.sequences), "items": int(data.n_items)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
