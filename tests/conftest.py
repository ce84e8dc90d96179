"""Session-wide test hooks."""
from __future__ import annotations

import sys


def pytest_sessionfinish(session, exitstatus):
    """Stop Milvus Lite's embedded servers while pytest's log streams are still open: its own atexit hook
    logs after pytest closed them and prints 'I/O operation on closed file' tracebacks at exit."""
    manager = sys.modules.get("milvus_lite.server_manager")
    if manager is not None:
        manager.server_manager_instance.release_all()
