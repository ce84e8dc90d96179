"""kafka-python, imported once with its one known, harmless warning silenced (at the source, not globally).

kafka-python 3.0 reads its protocol schemas with importlib.resources' legacy API, deprecated in Python 3.11, while
the package is first imported. Later ``from kafka import ...`` statements find the cached module and warn nothing.
"""
from __future__ import annotations

import warnings


def import_kafka():
    """``import kafka`` without the importlib ``read_text``/``open_text`` deprecation warnings; returns the module."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(read_text|open_text) is deprecated", category=DeprecationWarning)
        import kafka
    return kafka
