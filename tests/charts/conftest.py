"""Fixtures for the chart tests: a real `helm` CLI and the chart rendered with default and production values."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("hymirec_helm_runner", Path(__file__).with_name("helm_runner.py"))
helm_runner = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = helm_runner
_spec.loader.exec_module(helm_runner)


@pytest.fixture(scope="session")
def helm():
    return helm_runner.Helm()


@pytest.fixture(scope="session")
def default_render(helm):
    return helm.template()


@pytest.fixture(scope="session")
def production_render(helm):
    return helm.template([helm_runner.PRODUCTION_VALUES])


@pytest.fixture(scope="session")
def production_values():
    import yaml

    return yaml.safe_load(helm_runner.PRODUCTION_VALUES.read_text())


@pytest.fixture(scope="session")
def default_values():
    import yaml

    return yaml.safe_load((helm_runner.CHART / "values.yaml").read_text())
