"""bench/reliability.py: the figures the reliability tests write become a record the results page accepts and
renders; without the environment variable the tests write nothing; a missing scenario is named."""
from __future__ import annotations

import json

import pytest

from bench import reliability
from bench.results_page import area_records, area_section

FIGURES = {
    "consumers": {"consumers": 3, "partitions": 6, "kills": 22, "mid_stream": 21, "events": 24000, "lost": 0,
                  "doubled": 0, "seconds": 95.2},
    "redis_outages": {"outages": 3, "signals": ["SIGTERM", "SIGKILL", "SIGTERM"], "events": 14000, "lost": 0,
                      "doubled": 0, "store_retries": 9, "seconds": 41.0},
    "fuzz": {"requests": 200, "status_5xx": 0, "statuses": {"200": 31, "401": 120, "422": 49}, "seconds": 12.5},
}


def test_figures_become_a_record_the_page_renders(tmp_path, monkeypatch):
    monkeypatch.setenv(reliability.ENV, str(tmp_path / "figs"))
    for name, figs in FIGURES.items():
        reliability.report_figures(name, **figs)
    read = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "figs").glob("*.json")}
    record = reliability.build_record(read, "2026-12-04", "2 CPU cores, 24 GiB, no GPU used")
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "reliability.json").write_text(json.dumps(record))
    [loaded] = area_records(tmp_path / "records")  # the page's own validation of the keys
    text = area_section(loaded)
    assert "3 processors × 22 kill -9 / restart (21 with lag > 0), 6 partitions" in text
    assert "| many consumers |" in text and "| 24,000 | 0 | 0 | – | 95 |" in text
    assert "3 redis-server restarts mid-stream (SIGTERM, SIGKILL, SIGTERM), 9 store retries" in text
    assert "| serving fuzz |" in text and "| 200 | – | – | 0 | 12 |" in text and "401 × 120" in text
    assert reliability.COMMAND in text


def test_tests_write_nothing_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(reliability.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    reliability.report_figures("fuzz", requests=1)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_scenario_is_named():
    with pytest.raises(ValueError, match="redis_outages"):
        reliability.build_record({k: v for k, v in FIGURES.items() if k != "redis_outages"}, "2026-12-04", "m")
