"""Reliability figures for the results page, measured by the reliability tests themselves.

    python -m bench.reliability --record bench/records/reliability.json      # 2.5 min on 2 shared CPU cores

The figures come from the tests that assert them, not from a second implementation that could drift: the script
runs their core scenarios with pytest and HYMIREC_RELIABILITY_OUT=<a temporary directory>, each test writes what it
saw there (:func:`report_figures`, a no-op when the variable is unset, i.e. in `make test`), and the record is
built from those files:

  consumers      tests/features/test_stream_consumers.py   3 processors, 6 partitions, 22 kill -9 / restart cycles
  redis_outages  tests/features/test_stream_redis_outage.py  redis-server stopped 3 times mid-stream
  fuzz           tests/serving/test_serving_fuzz.py          Hypothesis requests against the guarded app

The tests run against the real Kafka broker, redis-server and app the project starts itself. A failing test or a
missing figure file writes no record (exit 1) and prints what was seen, so the page never shows a run that failed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = "HYMIREC_RELIABILITY_OUT"
SCENARIOS = {
    "consumers": "tests/features/test_stream_consumers.py::test_three_processors_survive_kill_9_rebalances",
    "redis_outages": "tests/features/test_stream_redis_outage.py::test_redis_restarts_mid_stream_lose_and_double_nothing",
    "fuzz": "tests/serving/test_serving_fuzz.py::test_fuzz_never_5xx_never_internals",
}
COMMAND = "python -m bench.reliability --record bench/records/reliability.json"
COLUMNS = ["scenario", "what was done", "events / requests", "events lost", "events applied twice", "5xx seen",
           "seconds"]


def report_figures(name: str, **figures) -> None:
    """Called by a reliability test with what it measured; writes <$HYMIREC_RELIABILITY_OUT>/<name>.json."""
    out = os.environ.get(ENV)
    if not out:
        return
    path = Path(out) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=1, sort_keys=True))


def run_scenarios(out_dir: Path, python: str = sys.executable, timeout_s: float = 900) -> tuple[int, dict]:
    """Run the scenarios' tests (one pytest per tests directory: each has its own services) and read the figures.
    Returns (worst pytest exit code, {scenario: figures})."""
    by_dir: dict[str, list[str]] = {}
    for node in SCENARIOS.values():
        by_dir.setdefault(node.split("/")[1], []).append(node)
    env = dict(os.environ, **{ENV: str(out_dir)})
    worst = 0
    for nodes in by_dir.values():
        cmd = [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", *nodes]
        print("$", " ".join(cmd), flush=True)
        worst = max(worst, subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout_s).returncode)
    figures = {name: json.loads((out_dir / f"{name}.json").read_text())
               for name in SCENARIOS if (out_dir / f"{name}.json").is_file()}
    return worst, figures


def _n(value) -> str:
    return f"{value:,}"


def build_record(figures: dict, measured_at: str, machine: str) -> dict:
    missing = sorted(set(SCENARIOS) - set(figures))
    if missing:
        raise ValueError(f"no figures from {', '.join(missing)}: did those tests run to their measurement?")
    c, r, f = figures["consumers"], figures["redis_outages"], figures["fuzz"]
    rows = [
        ["many consumers", f"{c['consumers']} processors × {c['kills']} kill -9 / restart ({c['mid_stream']} with lag "
         f"> 0), {c['partitions']} partitions, Redis store", _n(c["events"]), _n(c["lost"]), _n(c["doubled"]), "–",
         f"{c['seconds']:.0f}"],
        ["Redis outages", f"{r['outages']} redis-server restarts mid-stream ({', '.join(r['signals'])}), "
         f"{r['store_retries']} store retries", _n(r["events"]), _n(r["lost"]), _n(r["doubled"]), "–",
         f"{r['seconds']:.0f}"],
        ["serving fuzz", "Hypothesis: arbitrary JSON bodies, headers and keys; statuses "
         + ", ".join(f"{code} × {n}" for code, n in sorted(f["statuses"].items())),
         _n(f["requests"]), "–", "–", _n(f["status_5xx"]), f"{f['seconds']:.0f}"],
    ]
    return {
        "area": "Reliability: many consumers, Redis outages, serving fuzz",
        "measured_at": measured_at, "machine": machine, "command": COMMAND,
        "setup": "Real Kafka broker (KRaft, single node), real redis-server, the real app over HTTP; the figures are "
                 "written by the tests that assert them (" + ", ".join(v.split("::")[0] for v in SCENARIOS.values())
                 + "); lost / applied twice = per-user applied-event counts against the golden state.",
        "columns": COLUMNS, "rows": rows,
        "reading": "Kills, restarts and outages land while a producer keeps sending (\"with lag > 0\": kills with "
                   "unprocessed events at that moment); events include the producer's 1 % duplicates, which the "
                   "processor skips. 0 lost and 0 applied twice is what the tests require, so a record exists only "
                   "for a run where that held.",
    }


def machine_description() -> str:
    try:
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
        memory = f", {kib / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = ""
    return f"{os.cpu_count()} CPU cores{memory}, no GPU used"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench.reliability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", type=Path, help="write the record here (e.g. bench/records/reliability.json); "
                                                    "without it the record is printed")
    parser.add_argument("--machine", help="machine description for the record (default: cores and memory here)")
    parser.add_argument("--timeout-s", type=float, default=900, help="per pytest run")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hymirec-reliability-") as tmp:
        rc, figures = run_scenarios(Path(tmp), timeout_s=args.timeout_s)
    print(f"figures after {time.monotonic() - t0:.0f} s: {json.dumps(figures, sort_keys=True)}")
    if rc != 0 or set(figures) != set(SCENARIOS):
        print(f"not writing a record: pytest exited {rc}, figures from {sorted(figures)} of {sorted(SCENARIOS)}",
              file=sys.stderr)
        return 1
    record = build_record(figures, dt.date.today().isoformat(), args.machine or machine_description())
    text = json.dumps(record, indent=1, ensure_ascii=False) + "\n"
    if args.record:
        args.record.write_text(text)
        print(f"wrote {args.record}; `hymirec bench page` puts it on BENCHMARKS.md")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
