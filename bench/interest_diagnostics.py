"""Why several interests do or do not pay: a trained multi-interest window run scored again with each interest
alone and with their mean (one vector, what a K = 1 model could at best learn from the same queries), beside
the served merges. If the mean beats the max merge, the interests are noisy copies of one taste rather than
different tastes; if each interest alone is far below K = 1, each is trained on too little.

    python -m bench.mechanisms diagnose --out runs/mech1m --variant k3 --variant k3-maxloss

Writes <run>/interest_diagnostics.json ({"mean interest": metrics, "one interest alone, mean of K": metrics}), which
``report`` adds as rows under the run's own.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.artifacts import write_json_atomic

_AVERAGED = ("Recall@20", "Recall@50", "Recall@100", "NDCG@50", "Coverage@10", "Coverage@50", "ILD@50")


def _load(run_dir: Path):
    """The run's state, item tables and model, as its training left them (a window-protocol run)."""
    from training.protocols import is_window
    from training.train import load_trained_run

    state, item_emb, tables, model = load_trained_run(run_dir)
    if not is_window(state.split.test):
        raise ValueError(f"{run_dir}: interest diagnostics need a window-protocol run (train.protocol=window)")
    return state, item_emb, tables, model


def run_interests(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The run's item vectors [n+1, d] (what its index holds) and its test users' interests [U, K, d]."""
    from training.stage2 import predict_interests

    state, _, tables, model = _load(run_dir)
    interests = predict_interests(model, tables, state.split.test.histories)
    return model.item_vectors(tables.exact).float().numpy(), np.asarray(interests, np.float32)


def diagnose_run(run_dir: Path) -> dict[str, dict]:
    """The run's test users through its own model, with its own labels and ILD vectors (as its metrics.json)."""
    from training.protocols import interest_window_metrics, window_labels
    from training.stage2 import predict_interests

    state, item_emb, tables, model = _load(run_dir)
    test = state.split.test
    interests = predict_interests(model, tables, test.histories)
    vectors = model.item_vectors(tables.exact).float().numpy()
    labels = window_labels(state).matrix  # the labels the run itself was scored with

    def score(chosen: np.ndarray) -> dict:
        return interest_window_metrics(chosen, vectors, test, labels, item_emb)[0]

    mean = interests.mean(1, keepdims=True)
    mean /= np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)
    singles = [score(interests[:, k:k + 1]) for k in range(interests.shape[1])]
    # averaged over the K interests, not the best one: nothing here is picked on test numbers
    alone = {key: float(np.mean([m[key] for m in singles])) for key in singles[0] if key in _AVERAGED}
    out = {"mean interest": score(mean), f"one interest alone, mean of {len(singles)}": alone}
    if interests.shape[1] > 1:
        valid_interests = predict_interests(model, tables, state.split.valid.histories)
        lam, metrics = soft_merge_choice(valid_interests, interests, vectors, state.split.valid, test, labels, item_emb)
        out[f"soft merge: max + {lam:g} × mean (λ on validation)"] = metrics
    return out


SOFT_LAMBDAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def soft_merge_topk(interests: np.ndarray, vectors: np.ndarray, histories, lam: float, k: int = 100,
                    batch: int = 256) -> np.ndarray:
    """Top-k by ``max_k s_k + lam * mean_k s_k`` over the whole catalogue (history masked, item 0 never):
    the max merge that also credits items several interests like. [U, K, d] -> int64 [U, k]."""
    out = np.zeros((len(interests), k), np.int64)
    for start in range(0, len(interests), batch):
        scores = np.einsum("bkd,nd->bkn", interests[start:start + batch], vectors)
        merged = scores.max(1) + lam * scores.mean(1)
        merged[:, 0] = -np.inf
        for row, seen in enumerate(histories[start:start + batch]):
            merged[row, np.asarray(seen, np.int64)] = -np.inf
        top = np.argpartition(-merged, k, axis=1)[:, :k]
        order = np.take_along_axis(merged, top, 1).argsort(1)[:, ::-1]
        out[start:start + batch] = np.take_along_axis(top, order, 1)
    return out


def soft_merge_choice(valid_interests, test_interests, vectors, valid, test, labels, item_emb):
    """λ with the best validation Recall@50 (ties: the smaller λ), then that λ's test metrics."""
    from training.evaluate_window import history_without_targets, window_metrics_from_topk

    def metrics(interests, eval_set, lam, full: bool):
        masked = history_without_targets(eval_set.histories, eval_set.targets)
        topk = soft_merge_topk(interests, vectors, masked, lam)
        return window_metrics_from_topk(topk, eval_set.targets, labels if full else None,
                                        item_emb if full else None)

    on_valid = {lam: metrics(valid_interests, valid, lam, False)["Recall@50"] for lam in SOFT_LAMBDAS}
    best = max(SOFT_LAMBDAS, key=lambda lam: (on_valid[lam], -lam))
    print("[diagnose] soft merge, validation Recall@50 by λ: "
          + ", ".join(f"{lam:g}: {r:.4f}" for lam, r in on_valid.items()), flush=True)
    return best, metrics(test_interests, test, best, True)


def diagnose(out: Path, variants: list[str], protocol: str = "window") -> None:
    for variant in variants:
        run_dir = out / protocol / variant
        result = diagnose_run(run_dir)
        write_json_atomic(run_dir / "interest_diagnostics.json", result)
        print(f"[diagnose] {variant}: " + json.dumps({name: round(m["Recall@50"], 4) for name, m in result.items()}),
              flush=True)


def _cluster_centres(rows: np.ndarray, k: int) -> np.ndarray:
    """Unit centres [k, d] of DMIL's cosine k-means over unit rows [n, d] (fewer groups than k repeat the last)."""
    from training.dmil import cosine_kmeans, group_centres

    centres = group_centres(rows, cosine_kmeans(rows, k))[1]
    return np.concatenate([centres, np.repeat(centres[-1:], k - len(centres), 0)]) if len(centres) < k else centres


def cluster_interests(item_sets, vectors: np.ndarray, k: int) -> np.ndarray:
    """K unit interests per user from the vectors of a set of their items: [U, K, d]. K = 1 is the set's mean."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return np.stack([_cluster_centres(unit[np.asarray(items, np.int64)], k) for items in item_sets]).astype(np.float32)


def steered_interests(interest: np.ndarray, centres: np.ndarray, alpha: float, keep: bool = True) -> np.ndarray:
    """K interests from one: the user's single interest [U, 1, d] (unit) tilted toward each of K unit directions
    [U, K, d] (the user's history clusters), unit(u + alpha * c_k); with ``keep`` the untilted interest is one more.
    alpha 0 gives K copies of u; large alpha gives the clusters themselves. → [U, K (+1), d]"""
    tilted = interest + alpha * centres
    tilted /= np.maximum(np.linalg.norm(tilted, axis=-1, keepdims=True), 1e-12)
    return (np.concatenate([interest, tilted], 1) if keep else tilted).astype(np.float32)


HEADROOM_KS = (1, 3, 5)


def headroom_run(run_dir: Path, recent: int = 50) -> dict[str, dict]:
    """How far K vectors *could* beat one in this run's item space, and what clustering alone gives.

    - oracle (uses the test targets, not a method): interests = the K k-means centres of the user's own test
      window's item vectors, K = 1 their mean. If K = 3 barely beats K = 1 here, no predictor of K interests
      can win much either: the targets are not several tight groups in this space.
    - history clusters (a method, no training): the K centres of the user's last ``recent`` history items.
    Both ranked by the served max merge over the run's own item vectors, history masked, as every other row.
    """
    from training.protocols import interest_window_metrics, window_labels

    state, item_emb, tables, model = _load(run_dir)
    test = state.split.test
    vectors = model.item_vectors(tables.exact).float().numpy()
    labels = window_labels(state).matrix
    out = {}
    for k in HEADROOM_KS:
        oracle = cluster_interests(test.targets, vectors, k)
        out[f"oracle K={k}: centres of the test window"] = interest_window_metrics(
            oracle, vectors, test, labels, item_emb)[0]
    for k in HEADROOM_KS:
        clusters = cluster_interests([h[-recent:] for h in test.histories], vectors, k)
        out[f"history clusters K={k} (last {recent} items)"] = interest_window_metrics(
            clusters, vectors, test, labels, item_emb)[0]
    if model.config.n_interests == 1:  # the run's own interest, tilted toward those clusters: a K > 1 method
        name, metrics = steered_choice(model, tables, state.split.valid, test, vectors, labels, item_emb, recent)
        out[name] = metrics
    return out


STEER_KS = (3, 5)
STEER_ALPHAS = (0.1, 0.2, 0.35, 0.5, 0.75)


def steered_choice(model, tables, valid, test, vectors, labels, item_emb, recent: int = 50) -> tuple[str, dict]:
    """K = 1's interest tilted toward K clusters of the last ``recent`` history items (:func:`steered_interests`,
    the untilted interest kept or not), every setting chosen on validation Recall@50 (max merge); its test metrics,
    max and quota merge. → (row name, metrics)."""
    from training.protocols import interest_window_metrics
    from training.stage2 import predict_interests

    def interests_of(eval_set):
        own = np.asarray(predict_interests(model, tables, eval_set.histories), np.float32)
        return own, {k: cluster_interests([h[-recent:] for h in eval_set.histories], vectors, k) for k in STEER_KS}

    own, centres = interests_of(valid)
    scored = {}
    for k, alpha, keep in [(k, a, keep) for k in STEER_KS for a in STEER_ALPHAS for keep in (True, False)]:
        steered = steered_interests(own, centres[k], alpha, keep)
        scored[(k, alpha, keep)] = interest_window_metrics(steered, vectors, valid)[0]["Recall@50"]
        print(f"[headroom] steered K={k} alpha={alpha} keep={keep}: validation Recall@50 "
              f"{scored[(k, alpha, keep)]:.4f}", flush=True)
    # ties: fewer clusters, less tilt, the untilted interest not kept (one vector fewer to search)
    k, alpha, keep = max(scored, key=lambda c: (scored[c], -c[0], -c[1], not c[2]))
    own, centres = interests_of(test)
    steered = steered_interests(own, centres[k], alpha, keep)
    metrics = interest_window_metrics(steered, vectors, test, labels, item_emb)[0]
    quota = interest_window_metrics(steered, vectors, test, labels, item_emb, merge="quota")[0]
    metrics.update({f"quota {key}": value for key, value in quota.items()})
    name = (f"K={k + keep} steered: the K=1 interest tilted toward {k} clusters of the last {recent} items "
            f"(alpha {alpha:g}{', untilted kept' if keep else ''}; on validation)")
    return name, metrics


def headroom(out: Path, variant: str = "k1", protocol: str = "window") -> dict[str, dict]:
    run_dir = out / protocol / variant
    result = headroom_run(run_dir)
    write_json_atomic(run_dir / "interest_headroom.json", result)
    for name, m in result.items():
        print(f"[headroom] {name}: Recall@50 {m['Recall@50']:.4f} Coverage@50 {m.get('Coverage@50', float('nan')):.4f}",
              flush=True)
    return result
