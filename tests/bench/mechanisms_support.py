"""Helpers of the mechanisms bench's tests: a finished run's metrics.json, as `bench.mechanisms run` writes it."""
from __future__ import annotations

import json


def write_run(tmp_path, protocol, variant, test, quota=None, extra=None, valid=None):
    """OUT/<protocol>/<variant>/metrics.json with HyMiRec's test metrics ``test`` (and its best validation score)."""
    run = tmp_path / protocol / variant
    run.mkdir(parents=True)
    hymirec = {"test": test, "epochs": 4, "valid_best": valid, **({"test_quota": quota} if quota else {})}
    labels = {"interest_labels": {"source": "planted"}} if protocol == "window" else {}
    (run / "metrics.json").write_text(json.dumps({"hymirec": hymirec, "popularity": {"test": test}, **labels,
                                                  **(extra or {})}))
