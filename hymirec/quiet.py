"""Keep the console for the project's own progress: silence known, harmless dependency chatter.

Each filter names one message we have read and judged harmless; anything else still shows.
"""
from __future__ import annotations

import logging
import warnings


def quiet_dependency_warnings() -> None:
    # feast.feature_view runs warnings.simplefilter("once", DeprecationWarning) when first imported, which would
    # put it in front of the filter below: import it first (the stream and serving steps import it anyway).
    try:
        import feast.feature_view  # noqa: F401
    except ImportError:  # pragma: no cover - feast is a project dependency
        pass
    # kafka-python 3.0 reads its protocol schemas with importlib.resources' legacy API (deprecated in 3.11).
    warnings.filterwarnings("ignore", message=r"(read_text|open_text) is deprecated", category=DeprecationWarning)
    # torch.onnx registers torchvision's operators when torchvision is installed; we do not use them.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
