"""The converged view's plot reads the gains the report wrote, as the page's table does."""
from bench.converged_plot import converged_gains, parse_gain, plot_converged


def test_gain_text_with_interval_point_only_and_missing():
    assert parse_gain("+9.2 % (95 % CI +3.3 to +15.7 %)") == (9.2, 3.3, 15.7)
    assert parse_gain("-24.7 % (95 % CI -33.9 to -14.7 %)") == (-24.7, -33.9, -14.7)
    assert parse_gain("+1.0 %") == (1.0, None, None)
    assert parse_gain("–") is None
    assert parse_gain("about ten per cent") is None


def test_only_converged_records_with_a_rival_are_drawn(tmp_path):
    records = [
        {"area": "serving"},  # not a converged record
        {"converged": {"dataset": "ml-100k", "strongest": "BERT4Rec (RecTools)",
                       "vs_strongest": "+13.2 % (95 % CI +0.6 to +27.6 %)"}},
        {"converged": {"dataset": "Beauty", "strongest": None, "vs_strongest": "–"}},  # HyMiRec had no rival
    ]
    assert converged_gains(records) == [{"dataset": "ml-100k", "strongest": "BERT4Rec (RecTools)",
                                         "gain": 13.2, "low": 0.6, "high": 27.6}]
    path = tmp_path / "plot.png"
    assert plot_converged(records, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plot_converged(records[:1], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_recorded_numbers_win_over_the_text():
    """A record written since the report stores its numbers is drawn from them; its text (rounded) is not parsed."""
    records = [{"converged": {"dataset": "Games", "strongest": "SASRec (ours)", "vs_strongest": "+9.2 % (…)",
                              "vs_strongest_pct": {"gain": 9.21, "low": 3.34, "high": 15.68}}},
               {"converged": {"dataset": "ml-1m", "strongest": "SASRec (ours)", "vs_strongest": "+1.0 %",
                              "vs_strongest_pct": {"gain": 1.04, "low": None, "high": None}}}]
    assert converged_gains(records) == [
        {"dataset": "Games", "strongest": "SASRec (ours)", "gain": 9.21, "low": 3.34, "high": 15.68},
        {"dataset": "ml-1m", "strongest": "SASRec (ours)", "gain": 1.04, "low": None, "high": None}]
