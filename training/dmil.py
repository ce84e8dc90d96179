"""DMIL: disentangled multi-interest learning (window targets, grouping, Hungarian matching, loss).

For one training sample the last W items are held out as targets. They are grouped into (up to)
K groups by cosine k-means; the groups are matched one-to-one to the K interest-query outputs by
the Hungarian algorithm. This is the balancing: every query gets a group, so no query starves and
the queries cannot all collapse onto the dominant interest. Each target is then a positive of its
matched query in an InfoNCE loss with cosine scores, a learnable temperature, in-batch + sampled
random negatives, and false-negative masking.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


def cosine_kmeans(x: np.ndarray, k: int, iters: int = 5, rng: np.random.Generator | None = None) -> np.ndarray:
    """Group the rows of x [W, d] (L2-normalised) into min(k, W) groups; returns labels [W].

    With W ≤ k every target is its own group (nothing to cluster).
    """
    w = x.shape[0]
    if w <= k:
        return np.arange(w)
    rng = rng or np.random.default_rng(0)
    # Farthest-first seeding (random first centre): distinct interests start in distinct groups,
    # which plain random seeding misses whenever two seeds fall in the same interest.
    chosen = [int(rng.integers(w))]
    for _ in range(k - 1):
        chosen.append(int((x @ x[chosen].T).max(1).argmin()))
    centres = x[chosen].copy()
    labels = np.zeros(w, dtype=np.int64)
    for _ in range(iters):
        labels = (x @ centres.T).argmax(1)
        for g in range(k):
            members = x[labels == g]
            if len(members):  # an emptied centre keeps its old position
                total = members.sum(0)
                centres[g] = total / max(np.linalg.norm(total), 1e-8)
    return labels


def group_centres(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The groups present in ``labels`` [n] and their unit centres (normalised sums of x's rows [n, d]): [G], [G, d]."""
    groups = np.unique(labels)
    centres = np.stack([x[labels == g].sum(0) for g in groups])
    return groups, centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-8)


def match_targets_to_queries(
    interests: np.ndarray, targets: np.ndarray, target_mask: np.ndarray, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Assign every valid target to one interest query.

    interests [B, K, d], targets [B, W, d] (both L2-normalised), target_mask [B, W] bool
    → assignment [B, W] int64 (query index; -1 where the target is padding).
    Groups ↔ queries are matched one-to-one (scipy `linear_sum_assignment` on −cosine).
    """
    rng = rng or np.random.default_rng(0)
    b, k, _ = interests.shape
    assignment = np.full(target_mask.shape, -1, dtype=np.int64)
    for i in range(b):
        idx = np.flatnonzero(target_mask[i])
        if len(idx) == 0:
            continue
        labels = cosine_kmeans(targets[i, idx], k, rng=rng)
        groups, centres = group_centres(targets[i, idx], labels)
        rows, cols = linear_sum_assignment(-(centres @ interests[i].T))  # [G, K] similarity
        query_of_group = dict(zip(groups[rows].tolist(), cols.tolist()))
        assignment[i, idx] = [query_of_group[g] for g in labels.tolist()]
    return assignment


def nearest_query_assignment(interests: np.ndarray, targets: np.ndarray, target_mask: np.ndarray) -> np.ndarray:
    """Each valid target to the query that scores it highest (ComiRec's argmax routing, no balancing).

    interests [B, K, d], targets [B, W, d] (L2-normalised), target_mask [B, W] → assignment [B, W] (-1 = padding).
    Unlike the balanced matching, a query may get no target of a sample, so one interest can specialise on
    a user's dominant taste while the others take what the dominant one scores worst.
    """
    assignment = np.einsum("bkd,bwd->bwk", interests, targets).argmax(-1)
    return np.where(target_mask, assignment, -1).astype(np.int64)


ROUTINGS = ("balanced", "nearest")


def route_targets(interests: np.ndarray, targets: np.ndarray, target_mask: np.ndarray, routing: str,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """Which query each window target trains (``hybrid.interest_routing``): "balanced" = cosine k-means groups
    matched one-to-one to the queries (the paper's DMIL), "nearest" = each target to its best-scoring query."""
    if routing == "balanced":
        return match_targets_to_queries(interests, targets, target_mask, rng)
    if routing == "nearest":
        return nearest_query_assignment(interests, targets, target_mask)
    raise ValueError(f"hybrid.interest_routing must be one of {ROUTINGS}, got {routing!r}")


@dataclass
class DMILStats:
    loss: float
    query_share: list[float]  # fraction of targets assigned to each query
    inter_query_cos: float  # mean cosine between different interests of the same user
    temperature: float


def dmil_loss(
    interests: torch.Tensor,
    target_vecs: torch.Tensor,
    target_ids: torch.Tensor,
    target_mask: torch.Tensor,
    assignment: torch.Tensor,
    negative_vecs: torch.Tensor,
    negative_ids: torch.Tensor,
    logit_scale: torch.Tensor,
    false_negative_threshold: float = 0.98,
) -> tuple[torch.Tensor, DMILStats]:
    """InfoNCE of every target against its matched query.

    interests [B, K, d], target_vecs [B, W, d], target_ids [B, W], target_mask [B, W] bool,
    assignment [B, W] (query per target), negative_vecs [M, d], negative_ids [M]. Interests are
    L2-normalised; item vectors too, or scaled by learned per-item norms (HybridConfig.item_norm).
    Negatives are the sampled items plus the targets of the *other* samples in the batch; a candidate is masked
    when it is the target's own item, one of the same sample's targets (those are positives of other queries),
    or cosine(target, candidate) > threshold.
    """
    k = interests.shape[1]
    valid = target_mask.reshape(-1)
    flat_targets, flat_ids, sample_of = _flat_targets(target_vecs, target_ids, target_mask)
    query = interests[sample_of, assignment.reshape(-1)[valid]]  # [P, d]
    cand_vecs, cand_ids, cand_sample = _candidates(negative_vecs, negative_ids, flat_targets, flat_ids, sample_of)
    positive = (query * flat_targets).sum(-1, keepdim=True)  # [P, 1]
    negative = query @ cand_vecs.T  # [P, M + P]
    loss, scale = _masked_infonce(positive, negative, flat_targets, flat_ids, sample_of, cand_vecs, cand_ids,
                                  cand_sample, logit_scale, false_negative_threshold)

    return loss, interest_stats(loss, interests, assignment.reshape(-1)[valid], scale)


@torch.no_grad()
def interest_stats(loss: torch.Tensor, interests: torch.Tensor, query_of_target: torch.Tensor,
                   scale: torch.Tensor) -> DMILStats:
    """What one step says about the K interests [B, K, d]: the share of targets each query took
    (``query_of_target`` [P], valid targets only), the mean cosine between a user's different interests, and the
    temperature 1 / ``scale``."""
    k = interests.shape[1]
    counts = torch.bincount(query_of_target, minlength=k).float()
    share = (counts / counts.sum().clamp(min=1)).tolist()
    inter = 1.0
    if k > 1:
        sims = interests @ interests.transpose(1, 2)
        inter = float(sims[:, ~torch.eye(k, dtype=torch.bool, device=sims.device)].mean())
    return DMILStats(float(loss.detach()), share, inter, float(1.0 / scale.detach()))


@torch.no_grad()
def missed_targets(first: torch.Tensor, target_vecs: torch.Tensor, candidate_vecs: torch.Tensor,
                   rank: int) -> torch.Tensor:
    """Which window targets one interest misses (``hybrid.residual_rank``): first [B, d], target_vecs [B, W, d],
    candidate_vecs [M, d] → [B, W] bool, True where at least ``rank`` candidates score above the target."""
    target_scores = torch.einsum("bd,bwd->bw", first, target_vecs)
    above = (first @ candidate_vecs.T)[:, None, :] > target_scores[..., None]  # [B, W, M]
    return above.sum(-1) >= rank


def max_merge_loss(
    interests: torch.Tensor, target_vecs: torch.Tensor, target_ids: torch.Tensor, target_mask: torch.Tensor,
    negative_vecs: torch.Tensor, negative_ids: torch.Tensor, logit_scale: torch.Tensor,
    false_negative_threshold: float = 0.98, softness: float = 0.0,
) -> torch.Tensor:
    """InfoNCE on the score that retrieval ranks by: every candidate (target or negative) scored by its *best*
    interest, max_k cos(u_k, item) — the served max merge (``hybrid.max_merge_weight``). With ``softness`` τ > 0
    the max is smoothed to τ · logsumexp_k(cos_k / τ) (``hybrid.max_merge_softness``): every interest gets
    gradient in proportion to how well it scores the candidate, not only the best one.

    Shapes as :func:`dmil_loss` (no assignment). DMIL trains each query on its own group against every other
    item, so nothing there teaches how the K scores compare when merged; this loss does: a negative that one
    interest scores high costs as much as it costs in the merged ranking. Gradients reach, per candidate, the
    interest that scores it highest.
    """
    flat_targets, flat_ids, sample_of = _flat_targets(target_vecs, target_ids, target_mask)
    cand_vecs, cand_ids, cand_sample = _candidates(negative_vecs, negative_ids, flat_targets, flat_ids, sample_of)
    def merge(scores: torch.Tensor) -> torch.Tensor:  # over the interest axis 1
        return scores.amax(1) if softness <= 0 else softness * torch.logsumexp(scores / softness, 1)

    positive = merge(torch.einsum("pkd,pd->pk", interests[sample_of], flat_targets))[:, None]  # [P, 1]
    negative = merge(interests @ cand_vecs.T)[sample_of]  # per sample [B, M + P], then per target [P, M + P]
    return _masked_infonce(positive, negative, flat_targets, flat_ids, sample_of, cand_vecs, cand_ids, cand_sample,
                           logit_scale, false_negative_threshold)[0]


def logit_scale_value(logit_scale: torch.Tensor) -> torch.Tensor:
    """The learnable log-scale as the losses use it: exp, with the temperature kept in [0.01, 1]."""
    return logit_scale.clamp(0, float(np.log(100.0))).exp()


def _flat_targets(target_vecs, target_ids, target_mask):
    """The valid window targets flattened: vectors [P, d], ids [P], and the sample each came from [P]."""
    b, w, d = target_vecs.shape
    valid = target_mask.reshape(-1)
    sample_of = torch.arange(b, device=target_vecs.device).repeat_interleave(w)[valid]
    return target_vecs.reshape(-1, d)[valid], target_ids.reshape(-1)[valid], sample_of


def _candidates(negative_vecs, negative_ids, flat_targets, flat_ids, sample_of):
    """Negatives = the sampled items + every target of the batch: vectors [M + P, d], ids, owning sample (-1)."""
    return (torch.cat([negative_vecs, flat_targets], 0), torch.cat([negative_ids, flat_ids], 0),
            torch.cat([torch.full_like(negative_ids, -1), sample_of], 0))


def _masked_infonce(positive, negative, flat_targets, flat_ids, sample_of, cand_vecs, cand_ids, cand_sample,
                    logit_scale, false_negative_threshold):
    """Cross-entropy of positive [P, 1] against negative [P, M + P] scores, with a candidate masked when it is the
    target's own item, one of the same sample's targets (positives of other queries), or cosine(target,
    candidate) > threshold. → (loss, the logit scale used)."""
    scale = logit_scale_value(logit_scale)
    with torch.no_grad():
        masked = (cand_ids[None] == flat_ids[:, None]) | (cand_sample[None] == sample_of[:, None])
        # cosine, also when the item tower gives items learned norms (HybridConfig.item_norm)
        masked |= (F.normalize(flat_targets, dim=-1) @ F.normalize(cand_vecs, dim=-1).T) > false_negative_threshold
    # Mask *after* scaling: scale × (−inf) would give the temperature a NaN gradient.
    logits = scale * torch.cat([positive, negative], 1)
    logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(masked, float("-inf"))], 1)
    loss = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
    return loss, scale


def next_item_loss(recent_vecs: torch.Tensor, recent_ids: torch.Tensor, first_target: torch.Tensor,
                   catalogue_vecs: torch.Tensor, logit_scale: torch.Tensor, last: int = 0) -> torch.Tensor:
    """Dense next-item loss on the LLM's recent-item positions (SASRec-style, full softmax).

    recent_vecs [B, N, d] (state after each recent item), recent_ids [B, N] (0 = left padding),
    first_target [B] (the item right after the last recent one), catalogue_vecs [n_items+1, d]
    (row 0 = padding, never a class). Position j predicts recent_ids[:, j+1]; the last one the first target.
    Every sample then teaches N next-item steps instead of only its window targets; with ``last`` > 0 only the
    last ``last`` positions count (the earlier ones are another strided cut's, with less context there).
    """
    next_ids = torch.cat([recent_ids[:, 1:], first_target[:, None]], 1)
    valid = (recent_ids > 0) & (next_ids > 0)
    if last:
        valid[:, :max(0, valid.shape[1] - last)] = False
    if not bool(valid.any()):
        return recent_vecs.sum() * 0.0
    scale = logit_scale_value(logit_scale)
    logits = scale * (recent_vecs[valid] @ catalogue_vecs.T)  # [P, n_items+1]
    logits[:, 0] = float("-inf")
    return F.cross_entropy(logits, next_ids[valid])
