"""The serving Merge stage's two modes (ServingConfig.merge): max over interests, or k // K slots per interest."""
from __future__ import annotations

import numpy as np
import pytest

from serving.config import ServingConfig, ServingConfigError
from serving.stages import Merge


def _candidates():
    # interest 0 scores every one of its items above interest 1's best: the max merge shows interest 0 only
    ids = np.array([[1, 2, 3, 4, 5, 6], [11, 12, 13, 14, 15, 16]], dtype=np.int64)
    scores = np.array([[0.9, 0.89, 0.88, 0.87, 0.86, 0.85], [0.5, 0.49, 0.48, 0.47, 0.46, 0.45]])
    return {"cand_ids": ids, "cand_scores": scores, "k": 6, "exclude": np.array([2], np.int64),
            "interest_mask": np.array([True, True])}


def test_max_merge_follows_the_scores():
    out = Merge().run(_candidates())
    assert out["items"].tolist() == [1, 3, 4, 5, 6, 11] and set(out["interest"].tolist()) == {0, 1}


def test_quota_merge_gives_each_interest_k_over_k_slots_and_skips_masked_ones():
    out = Merge(mode="quota").run(_candidates())
    assert sorted(out["items"].tolist()) == [1, 3, 4, 11, 12, 13]  # 3 + 3, the seen item 2 still excluded
    masked = {**_candidates(), "interest_mask": np.array([True, False])}
    assert Merge(mode="quota").run(masked)["items"].tolist() == [1, 3, 4, 5, 6]  # interest 1 is padding: dropped


def test_merge_mode_is_validated_and_read_from_the_environment():
    assert ServingConfig.from_env({"HYMIREC_MERGE": "Quota"}).merge == "quota"
    with pytest.raises(ServingConfigError, match="merge must be one of"):
        ServingConfig.from_env({"HYMIREC_MERGE": "mean"})
