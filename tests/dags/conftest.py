"""Airflow for the DAG tests: a throw-away AIRFLOW_HOME with a migrated sqlite metadata DB (session-scoped).

Airflow reads its configuration when `airflow` is first imported, so tests import airflow inside the test
functions (after this fixture ran), never at module top level.
"""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags"


@pytest.fixture(scope="session", autouse=True)
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow_home")
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    if "airflow" in sys.modules:  # imported earlier in this process: its config is already loaded
        warnings.warn("airflow was imported before the airflow_home fixture; import it inside tests")
    proc = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (home / "airflow.db").exists()
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
