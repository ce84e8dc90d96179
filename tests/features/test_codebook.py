"""Property tests of features/codebook.py (cosine residual codebook). Small examples: the file runs in seconds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.codebook import (
    CodebookConfig,
    CodebookFormatError,
    ResidualCodebook,
)
from features.balanced_kmeans import greedy_capacity_assign

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw, max_layers: int = 4):
    """(embeddings [N, d] float32, config) with N >= codebook_size."""
    c = draw(st.integers(2, 12))
    n = draw(st.integers(c, 90))
    d = draw(st.integers(2, 12))
    cfg = CodebookConfig(n_layers=draw(st.integers(1, max_layers)), codebook_size=c, kmeans_iters=6,
                         balance_tolerance=draw(st.sampled_from([0.0, 0.1, 0.25, 0.5])),
                         seed=draw(st.integers(0, 3)), normalize_input=draw(st.booleans()))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    # a few clusters plus noise, so that layers have structure to find
    centres = rng.normal(size=(draw(st.integers(1, 5)), d))
    x = centres[rng.integers(0, len(centres), n)] + rng.normal(scale=0.5, size=(n, d))
    return x.astype(np.float32), cfg


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@FAST
@given(problems())
def test_codes_in_range_and_dtype(prob):
    x, cfg = prob
    cb = ResidualCodebook.fit(x, cfg)
    codes, scales = cb.encode_with_scales(x)
    assert codes.shape == (len(x), cfg.n_layers) and codes.dtype == np.uint8
    assert scales.shape == codes.shape and scales.dtype == np.float16
    assert codes.max() < cfg.codebook_size
    assert np.array_equal(codes, cb.encode(x))
    assert cb.decode(codes).shape == x.shape and cb.decode(codes).dtype == np.float32


def test_codes_uint16_above_256():
    x = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    cb = ResidualCodebook.fit(x, CodebookConfig(n_layers=1, codebook_size=257, kmeans_iters=2))
    codes = cb.encode(x)
    assert codes.dtype == np.uint16 and int(codes.max()) < 257


@FAST
@given(problems())
def test_more_layers_never_hurt_with_scales(prob):
    """e = sum_i alpha_i c_i + e^{L+1} and each layer removes a projection, so per item the with-scales error
    ||e - e_hat_l|| cannot grow with l; cos grows per item from l=1 to 2 (provable: e_hat_1 is the projection
    of e) and, per item, *may* dip at later layers; the mean over items is checked with a small slack."""
    x, cfg = prob
    cb = ResidualCodebook.fit(x, cfg)
    codes, scales = cb.encode_with_scales(x)
    target = _unit(x) if cfg.normalize_input else x
    err, cos = [], []
    for l in range(1, cfg.n_layers + 1):
        rec = cb.decode(codes, scales, n_layers=l)
        err.append(np.linalg.norm(target - rec, axis=1) / np.maximum(np.linalg.norm(target, axis=1), 1e-12))
        cos.append(np.einsum("nd,nd->n", _unit(target), _unit(rec)))
    err, cos = np.array(err), np.array(cos)
    assert (np.diff(err, axis=0) <= 5e-3).all()  # slack: alpha is stored as float16
    if cfg.n_layers >= 2:
        assert (cos[1] >= cos[0] - 5e-3).all()
    assert (np.diff(cos.mean(axis=1)) >= -1e-2).all()


@FAST
@given(problems())
def test_fit_time_clusters_balanced_within_tolerance(prob):
    x, cfg = prob
    cb = ResidualCodebook.fit(x, cfg)
    lo, hi = cfg.size_bounds(len(x))
    m = len(x) / cfg.codebook_size
    # the documented bounds are what the tolerance promises
    assert hi <= max(np.ceil(m), m * (1 + cfg.balance_tolerance)) and lo >= min(np.floor(m), m * (1 - cfg.balance_tolerance))
    assert cb.fit_sizes_.shape == (cfg.n_layers, cfg.codebook_size)
    assert (cb.fit_sizes_.sum(axis=1) == len(x)).all()
    assert (cb.fit_sizes_ >= lo).all() and (cb.fit_sizes_ <= hi).all()
    rep = cb.report(x)
    assert len(rep["encode_cluster_sizes"]) == cfg.n_layers  # encode-time (argmax) balance is reported, not bounded


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(2, 8), st.integers(0, 2**16), st.floats(1.0, 2.0))
def test_capacity_assignment_is_the_global_greedy(n, c, seed, slack):
    rng = np.random.default_rng(seed)
    sims = rng.uniform(-1, 1, size=(n, c)).astype(np.float32)
    hi = max(1, int(np.ceil(n / c * slack)))
    got = greedy_capacity_assign(sims, hi)
    want = np.full(n, -1)
    size = np.zeros(c, dtype=int)
    for flat in np.argsort(-sims, axis=None, kind="stable"):  # brute-force greedy over all pairs
        i, x = divmod(int(flat), c)
        if want[i] < 0 and size[x] < hi:
            want[i], size[x] = x, size[x] + 1
    assert np.array_equal(got, want)


@FAST
@given(problems(max_layers=3))
def test_deterministic_for_a_seed(prob):
    x, cfg = prob
    a, b = ResidualCodebook.fit(x, cfg), ResidualCodebook.fit(x, cfg)
    assert np.array_equal(a.centres, b.centres)
    assert np.array_equal(a.encode(x), b.encode(x))


@FAST
@given(problems(max_layers=3))
def test_save_load_round_trip(tmp_path_factory, prob):
    x, cfg = prob
    cb = ResidualCodebook.fit(x, cfg)
    path = cb.save(tmp_path_factory.mktemp("cb") / "codebook.npz")
    back = ResidualCodebook.load(path)
    assert back.config == cfg
    assert np.array_equal(back.centres, cb.centres) and np.array_equal(back.fit_sizes_, cb.fit_sizes_)
    assert np.array_equal(back.encode(x), cb.encode(x))


@pytest.fixture
def saved(tmp_path: Path) -> tuple[ResidualCodebook, Path]:
    x = np.random.default_rng(1).normal(size=(64, 8)).astype(np.float32)
    cb = ResidualCodebook.fit(x, CodebookConfig(n_layers=2, codebook_size=8, kmeans_iters=3))
    return cb, cb.save(tmp_path / "cb.npz")


def test_save_writes_exact_path(tmp_path: Path):
    x = np.random.default_rng(1).normal(size=(32, 4)).astype(np.float32)
    p = ResidualCodebook.fit(x, CodebookConfig(n_layers=1, codebook_size=4)).save(tmp_path / "codes.bin")
    assert p.exists() and not (tmp_path / "codes.bin.npz").exists()


@pytest.mark.parametrize("where", [0.3, 0.5, 0.8])
def test_corrupted_bytes_raise(saved, where):
    _, path = saved
    raw = bytearray(path.read_bytes())
    i = int(len(raw) * where)
    raw[i:i + 8] = bytes(b ^ 0xFF for b in raw[i:i + 8])
    path.write_bytes(bytes(raw))
    with pytest.raises(CodebookFormatError):
        ResidualCodebook.load(path)


def test_truncated_file_raises(saved):
    _, path = saved
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CodebookFormatError, match="corrupted|truncated"):
        ResidualCodebook.load(path)


def _rewrite(path: Path, **changes) -> None:
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    data.update(changes)
    with open(path, "wb") as f:
        np.savez(f, **data)


def test_tampered_centres_fail_checksum(saved):
    cb, path = saved
    c = cb.centres.copy()
    c[0, 0, 0] += 1e-3
    _rewrite(path, centres=c)
    with pytest.raises(CodebookFormatError, match="checksum"):
        ResidualCodebook.load(path)


def test_wrong_format_version_raises(saved):
    _, path = saved
    _rewrite(path, format_version=np.array(99))
    with pytest.raises(CodebookFormatError, match="version 99"):
        ResidualCodebook.load(path)


def test_not_a_zip_raises(tmp_path: Path):
    p = tmp_path / "x.npz"
    p.write_text(json.dumps({"hello": 1}))
    with pytest.raises(CodebookFormatError):
        ResidualCodebook.load(p)


@FAST
@given(problems(max_layers=3), st.integers(1, 30), st.integers(0, 2**16))
def test_new_items_encode_without_refit(prob, n_new, seed):
    x, cfg = prob
    cb = ResidualCodebook.fit(x, cfg)
    before = cb.centres.copy()
    new = np.random.default_rng(seed).normal(size=(n_new, x.shape[1])).astype(np.float64)  # float64 is accepted
    codes, scales = cb.encode_with_scales(new)
    assert codes.shape == (n_new, cfg.n_layers) and codes.max() < cfg.codebook_size
    assert np.isfinite(cb.decode(codes, scales)).all()
    assert np.array_equal(cb.centres, before)


def test_zero_rows_and_padding():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    x[0] = 0.0  # padding row: ignored by fit, encodes to code 0 with scale 0
    cb = ResidualCodebook.fit(x, CodebookConfig(n_layers=2, codebook_size=7, balance_tolerance=0.0))
    assert cb.fit_sizes_.sum(axis=1).tolist() == [49, 49]
    codes, scales = cb.encode_with_scales(x)
    assert (codes[0] == 0).all() and (scales[0] == 0).all()
    assert np.array_equal(cb.decode(codes, scales)[0], np.zeros(6, np.float32))
    assert cb.report(x)["n_zero_rows"] == 1


def test_degenerate_inputs_raise_clear_errors():
    cfg = CodebookConfig(codebook_size=16)
    with pytest.raises(ValueError, match="at least codebook_size=16"):
        ResidualCodebook.fit(np.ones((10, 4)), cfg)
    x = np.random.default_rng(0).normal(size=(40, 4))
    x[17, 2] = np.nan
    with pytest.raises(ValueError, match="row 17"):
        ResidualCodebook.fit(x, cfg)
    with pytest.raises(ValueError, match="2-D"):
        ResidualCodebook.fit(np.ones(40), cfg)
    cb = ResidualCodebook.fit(np.nan_to_num(x), CodebookConfig(n_layers=1, codebook_size=4))
    with pytest.raises(ValueError, match="dimension 5"):
        cb.encode(np.ones((3, 5)))
    with pytest.raises(ValueError, match="codes must be in"):
        cb.decode(np.full((2, 1), 9))
    with pytest.raises(ValueError, match="n_layers"):
        cb.decode(np.zeros((2, 1), dtype=np.uint8), n_layers=2)
    for bad in (dict(n_layers=0), dict(codebook_size=1), dict(codebook_size=70000), dict(balance_tolerance=1.0)):
        with pytest.raises(ValueError):
            CodebookConfig(**bad)


def test_identical_rows_do_not_crash():
    x = np.tile(np.array([[1.0, 2.0, 3.0]], np.float32), (20, 1))
    cb = ResidualCodebook.fit(x, CodebookConfig(n_layers=3, codebook_size=4))
    codes, scales = cb.encode_with_scales(x)
    rep = cb.report(x)
    assert rep["cos_mean_scales"] > 0.999 and np.isfinite(cb.decode(codes)).all()


def test_report_fields():
    x = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    rep = ResidualCodebook.fit(x, CodebookConfig(n_layers=3, codebook_size=8)).report(x)
    assert rep["bytes_per_item_codes"] == 3 and rep["bytes_per_item_scales"] == 9
    assert rep["bytes_float32"] == 64 and rep["ratio_codes"] == pytest.approx(64 / 3)
    for k in ("cos_mean_codes", "cos_p5_codes", "cos_mean_scales", "cos_p5_scales"):
        assert -1.0 <= rep[k] <= 1.0
    assert {"min", "max", "cv", "empty"} <= rep["fit_cluster_sizes"][0].keys()
