"""Which part of a user's history the lightweight recommender reads: one rule for training and serving.

The LLM recommender gets the N most recent items exactly; the lightweight recommender gets a *long* window
of up to ``long_len`` items decoded from their codebook codes. Two choices for where that window ends
(``HybridConfig.long_window``, written to the export manifest as ``dims["long_window"]``):

    history (oldest first)    i_1 ....................................... i_{n-N} | i_{n-N+1} ... i_n
    "all"   (default)                              [ ------------ long_len ------------------------ ]
    "older"                   [ ----------- long_len ------------------------ ]   (the N recent ones excluded)

"all" repeats the recent items in both branches (the coarse summary covers everything up to now);
"older" spends the whole long window on items the LLM does not see, so it reaches ``long_len`` items further
back. Which is better is a measurement, not an assumption (issue 25).

training/batches.py and serving/stages.py (Decode) both call :func:`long_window`, so the two cannot disagree.
Pure Python, no numpy: serving imports it without training.
"""
from __future__ import annotations

LONG_WINDOWS = ("all", "older")


def check_long_window(mode: str) -> str:
    """``mode`` if it is a known long-window rule; ValueError naming the known ones otherwise."""
    if mode not in LONG_WINDOWS:
        raise ValueError(f"long_window must be one of {list(LONG_WINDOWS)}, got {mode!r}")
    return mode


def long_window(length: int, long_len: int, n_recent: int, mode: str) -> slice:
    """The slice of a history of ``length`` items (oldest first) that the lightweight recommender reads.

    ``n_recent``: how many of the newest items the LLM recommender receives exactly (training: ``min(length,
    recent_n)``; any larger value means the same, since a history has no more). "all": the last ``long_len``
    items; "older": the last ``long_len`` items of ``history[:-n_recent]`` (empty when the history is no
    longer than ``n_recent``).
    """
    check_long_window(mode)
    if long_len < 0 or n_recent < 0 or length < 0:
        raise ValueError(f"long_window: negative length {length}, long_len {long_len} or n_recent {n_recent}")
    end = length if mode == "all" else max(0, length - n_recent)
    return slice(max(0, end - long_len), end)
