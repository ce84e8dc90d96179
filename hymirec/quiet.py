"""Keep the console for the project's own progress: silence known, harmless dependency chatter.

Each line names one message we have read and judged harmless; anything else still shows. (kafka-python's
import-time deprecation warnings are silenced where it is imported: features/kafka_import.py.)
"""
from __future__ import annotations

import logging


def quiet_dependency_warnings() -> None:
    # torch.onnx registers torchvision's operators when torchvision is installed; we do not use them.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
