"""A peer library's model on the mechanisms bench's leave-one-out split, trained to its own early stop (issue 26's
converged view): `python -m bench.mechanisms peer` calls :func:`run_peer_converged`, `report` reads what it wrote."""
from __future__ import annotations

import json
import os
from pathlib import Path

PEER_EPOCH_CAP = 300  # the `peer` step's epoch cap: far past where patience 10 stops a converging peer
PEER_PATIENCE = 10  # the same patience rule as every model we train (validation NDCG@10)


def run_peer_converged(dataset: str, out: Path, peer_name: str, seed: int = 0, peer=None,
                       pause_after: float | None = None, patience: int = PEER_PATIENCE,
                       epoch_cap: int = PEER_EPOCH_CAP, **runner) -> dict | None:
    """A peer library's model on this bench's leave-one-out split, to its own early stop: no time budget, an epoch
    cap meant not to bind (``epoch_cap``, PEER_EPOCH_CAP unless a slow learner reached it: its record then says
    ``early_stopped: false`` and the run is repeated with a higher cap), early stopping after ``patience`` epochs (at
    least 10) without a gain in validation NDCG@10, the library's default settings at dim 64 and length 50. Its
    lists are scored by our evaluator (bench/methods.score_lists), as every peer; writes
    OUT/leave_one_out/peers/<peer>/metrics.json, which ``report`` adds as a row.

    ``pause_after`` seconds: the runner (every library's checkpoints) stops at the next epoch end and this returns
    None; the same call later resumes it. A converged CPU run can so span several sessions."""
    from bench.methods import score_lists
    from bench.peers.outputs import read_split
    from bench.peers.runner import PEERS, PeerPaused, run_peer
    from bench.peers.split_export import export_split
    from training.data import leave_one_out
    from training.train import load_run_data

    peer = peer or PEERS.get(peer_name)  # ``peer`` + ``runner`` (python=, runner=): another runner, in tests
    if peer is None:
        raise SystemExit(f"unknown peer {peer_name!r}; known: {sorted(PEERS)}")
    root = out / "leave_one_out" / "peers"
    # an earlier run's scores in this folder (a shorter patience or cap) are not this run's: a paused or failed run
    # must leave none behind for `report` or `add-peer` to take as finished
    (root / peer_name / "metrics.json").unlink(missing_ok=True)
    data = load_run_data(dataset)
    split_dir = export_split(data, leave_one_out(data), root / "split")
    split = read_split(split_dir)
    try:
        run = run_peer(peer, split_dir, root / peer_name, epochs=epoch_cap, time_budget=None, seed=seed,
                       split=split, threads=int(os.environ.get("OMP_NUM_THREADS", "1")), pause_after=pause_after,
                       patience=patience, **runner)
    except PeerPaused as paused:
        print(f"[mechanisms] {paused}".splitlines()[0], flush=True)
        return None
    scored = score_lists(run.topk, split, None, run.protocol_violations, run.duplicate_items)
    result = {"label": peer.label, "test": scored["metrics"], "epochs": run.result.get("epochs_run"),
              # where a runner reports its best epoch: in params (RecBole, RecTools) or beside them (torch-rechub)
              "best_epoch": run.result.get("params", {}).get("best_epoch", run.result.get("best_epoch")),
              "early_stopped": run.result.get("epochs_run", 0) < epoch_cap, "epoch_cap": epoch_cap,
              "train_seconds": run.result.get("train_seconds"), "params": run.result.get("params", {}),
              "patience": patience,
              "protocol_violations": scored["protocol_violations"]}
    (root / peer_name / "metrics.json").write_text(json.dumps(result, indent=2))
    print(f"[mechanisms] {peer_name}: test NDCG@10 {scored['metrics']['NDCG@10']:.4f} after "
          f"{result['epochs']} epochs (best {result['best_epoch']})", flush=True)
    return result
