"""Sub-commands of the streaming, export, index and serving layers (registered by hymirec.cli)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Each layer adds its sub-commands here as it lands; handlers import lazily."""
