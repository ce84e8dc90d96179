"""The HyMiRec hybrid recommender: lightweight encoder + LLM recommender + item tower.

    long history (codebook-decoded) ──LightweightEncoder──► K_c coarse interests ─┐
    N recent items (exact embeddings) ─────────────────────────────────────────────┼─► LLMRecommender ─► K interests
                                                                  K interest queries┘
    item embedding (frozen, stage 1) ──ItemTower──► retrieval vector (same space as the interests)
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.history_window import check_long_window
from training.config import HybridConfig
from training.dmil import ROUTINGS
from training.lightweight import LightweightEncoder
from training.llm_recommender import LLMRecommender, ProjectionHead


class ItemTower(nn.Module):
    """Frozen item embedding [.., d_item] (+ optional learned id residual) → L2-normalised [.., d_out],
    times a learned per-item norm when ``n_norms`` is given (then not normalised: see HybridConfig.item_norm)."""

    def __init__(self, item_dim: int, out_dim: int, dropout: float, n_items: int | None = None,
                 n_norms: int | None = None):
        super().__init__()
        self.head = ProjectionHead(item_dim, out_dim, dropout)
        self.id_residual = nn.Embedding(n_items + 1, out_dim, padding_idx=0) if n_items else None
        if self.id_residual is not None:
            nn.init.normal_(self.id_residual.weight, std=0.01)
        # log of each item's vector norm, zero-initialised (every item starts on the unit sphere)
        self.log_norm = nn.Embedding(n_norms + 1, 1) if n_norms else None
        if self.log_norm is not None:
            nn.init.zeros_(self.log_norm.weight)

    def forward(self, item_emb: torch.Tensor, item_ids: torch.Tensor | None = None) -> torch.Tensor:
        vec = self.head(item_emb)
        if self.id_residual is not None and item_ids is not None:
            vec = F.normalize(vec + self.id_residual(item_ids), dim=-1)
        if self.log_norm is not None and item_ids is not None:
            vec = vec * self.log_norm(item_ids).exp()
        return vec


class HybridRecommender(nn.Module):
    def __init__(self, config: HybridConfig, item_dim: int, n_items: int):
        super().__init__()
        if not config.use_llm and not config.use_lightweight:
            raise ValueError("hybrid: use_llm=false needs use_lightweight=true (nothing would produce interests)")
        if config.anchor_last_item and config.next_item_weight <= 0:
            raise ValueError("hybrid: anchor_last_item=true needs next_item_weight > 0 (only the dense next-item loss "
                             "trains the newest recent state that it adds to every interest)")
        check_long_window(config.long_window)
        if config.interest_routing not in ROUTINGS:
            raise ValueError(f"hybrid.interest_routing must be one of {ROUTINGS}, got {config.interest_routing!r}")
        if config.holistic_interest and config.n_interests < 2:
            raise ValueError("hybrid.holistic_interest=true needs n_interests >= 2 (with K = 1 the one query is "
                             "already trained on every target)")
        if config.residual_rank < 0 or (config.residual_rank > 0 and not config.holistic_interest):
            raise ValueError("hybrid.residual_rank must be 0 (off) or > 0 with hybrid.holistic_interest=true (the "
                             f"first query is the one whose misses the others learn), got {config.residual_rank}")
        if config.max_merge_softness < 0:
            raise ValueError(f"hybrid.max_merge_softness must be >= 0 (0 = the hard max), got {config.max_merge_softness}")
        if config.dmil_weight < 0 or config.max_merge_weight < 0:
            raise ValueError("hybrid.dmil_weight and hybrid.max_merge_weight must be >= 0, got "
                             f"{config.dmil_weight} and {config.max_merge_weight}")
        if config.dmil_weight == 0 and config.max_merge_weight == 0:
            raise ValueError("hybrid.dmil_weight=0 needs hybrid.max_merge_weight > 0 (nothing would train the "
                             "interests)")
        if not 1 <= config.long_len <= config.lightweight.max_len:
            # beyond the position table, positions would be clamped and the oldest items alias one slot
            raise ValueError(f"hybrid.long_len must be in 1..lightweight.max_len={config.lightweight.max_len}, "
                             f"got {config.long_len}")
        self.config = config
        n_coarse = config.lightweight.n_coarse
        self.llm = LLMRecommender(
            config.llm, item_dim, config.n_interests, config.out_dim,
            max_positions=max(512, n_coarse + config.recent_n + config.n_interests + 8),
            anchor_last_item=config.anchor_last_item)
        llm_width = self.llm.hidden  # the pretrained backbone decides when hybrid.llm.path is given
        self.lightweight = LightweightEncoder(config.lightweight, item_dim, llm_width) if config.use_lightweight else None
        self.item_tower = ItemTower(item_dim, config.out_dim, config.item_tower_dropout,
                                    n_items if config.item_id_residual else None,
                                    n_items if config.item_norm else None)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1.0 / config.temperature))))
        if config.id_init not in ("zeros", "sasrec"):
            raise ValueError(f"hybrid.id_init must be 'zeros' or 'sasrec', got {config.id_init!r}")
        # The recent-item id part starts at zero (training starts from the pure content representation):
        # a full [n, d_item] table, or a narrow table through a zero-initialised up-projection.
        width = config.recent_id_dim or item_dim
        self.recent_id = nn.Embedding(n_items + 1, width, padding_idx=0) if config.recent_id_embedding else None
        self.recent_id_up = nn.Linear(width, item_dim, bias=False) if self.recent_id is not None and width != item_dim else None
        if self.recent_id_up is not None:
            nn.init.normal_(self.recent_id.weight, std=0.02)  # random, or the up-projection gets no gradient
            self.recent_id.weight.data[0] = 0
            nn.init.zeros_(self.recent_id_up.weight)
        elif self.recent_id is not None:
            nn.init.zeros_(self.recent_id.weight)

    def optimizer_groups(self, lr: float, llm_lr: float) -> list[dict]:
        """AdamW parameter groups (``hybrid.llm.lr``): the LLM backbone's weights at ``llm_lr``, all others at ``lr``."""
        backbone = list(self.llm.backbone.parameters())
        inside = {id(p) for p in backbone}
        return [{"params": [p for p in self.parameters() if id(p) not in inside], "lr": lr},
                {"params": backbone, "lr": llm_lr}]

    @torch.no_grad()
    def init_ids_from(self, weights: torch.Tensor) -> list[str]:
        """Copy a trained id embedding table [n_items+1, d] (SASRec's) into every id table d wide:
        the item tower's residual (d = out_dim) and a narrow recent-item table (d = recent_id_dim).
        Returns the names of the tables it set; raises when none fits."""
        done = []
        tower = self.item_tower.id_residual
        if tower is not None and tuple(tower.weight.shape) == tuple(weights.shape):
            tower.weight.copy_(weights)
            done.append("item_tower.id_residual")
        if self.recent_id_up is not None and tuple(self.recent_id.weight.shape) == tuple(weights.shape):
            self.recent_id.weight.copy_(weights)
            done.append("recent_id")
        if not done:
            raise ValueError(f"hybrid.id_init=sasrec: no id table of shape {tuple(weights.shape)} "
                             f"(item_id_residual needs out_dim = {weights.shape[1]}, or set recent_id_dim to it)")
        return done

    def _recent_id_part(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        table = self.recent_id.weight if ids is None else self.recent_id(ids)
        return table if self.recent_id_up is None else self.recent_id_up(table)

    def recent_embeddings(self, exact: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """What the LLM recommender sees for recent items ids [B, N]: exact stage-1 embedding (+ learned id part)."""
        emb = exact[ids]
        return emb if self.recent_id is None else emb + self._recent_id_part(ids)

    @torch.no_grad()
    def recent_table(self, exact: torch.Tensor) -> torch.Tensor:
        """[n_items+1, d_item] table of recent-item input embeddings, for serving (recent_item_embeddings.npy)."""
        return exact.clone() if self.recent_id is None else exact + self._recent_id_part()

    def coarse_interests(self, long_emb: torch.Tensor, long_mask: torch.Tensor) -> torch.Tensor:
        """long_emb [B, T, d_item], long_mask [B, T] → coarse [B, K_c, d_llm] (K_c = 0 without the lightweight model)."""
        if self.lightweight is None:
            return long_emb.new_zeros(long_emb.shape[0], 0, self.llm.config.hidden)
        return self.lightweight(long_emb, long_mask)

    def forward(self, long_emb, long_mask, recent_emb, recent_mask) -> torch.Tensor:
        """→ interests [B, K, d_out], L2-normalised (K = n_coarse for the no-LLM ablation).

        Inference path: unlike `forward_train`, no head over the N recent-item states (but for the newest
        one with `anchor_last_item`)."""
        coarse = self.coarse_interests(long_emb, long_mask)
        if not self.config.use_llm:
            return self.llm.head(coarse.float())
        return self.llm(coarse, recent_emb, recent_mask)

    def forward_train(self, long_emb, long_mask, recent_emb, recent_mask) -> tuple[torch.Tensor, torch.Tensor | None]:
        """→ (interests [B, K, d_out], recent-position vectors [B, N, d_out] or None), both L2-normalised.

        The interests are the query states through the head, never anchored: `anchor_last_item` is an
        inference-time combination of the two separately trained heads.

        The recent-position vectors are the LLM's causal states after each recent item, through the same
        head: the inputs of the dense next-item loss. None for the no-LLM ablation.
        """
        coarse = self.coarse_interests(long_emb, long_mask)
        if not self.config.use_llm:  # ablation: the LLM's head alone, as in serving's degraded mode
            return self.llm.head(coarse.float()), None
        hidden = self.llm.hidden_states(coarse, recent_emb, recent_mask).float()
        k, n = self.config.n_interests, recent_emb.shape[1]
        # Each head trained on its own (DMIL on the queries, the dense loss on the recent states):
        # `anchor_last_item` combines them only at inference (LLMRecommender.forward).
        return self.llm.head(hidden[:, -k:]), self.llm.head(hidden[:, :n])

    @torch.no_grad()
    def item_vectors(self, item_emb: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        """All items' retrieval vectors [n_items+1, d_out]; row 0 (padding) is zero."""
        ids = torch.arange(item_emb.shape[0], device=item_emb.device)
        out = torch.cat([self.item_tower(item_emb[i:i + batch], ids[i:i + batch])
                         for i in range(0, len(item_emb), batch)])
        out[0] = 0
        return out
