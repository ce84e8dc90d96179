"""Process helpers + session fixtures for real services used by tests (loopback, free ports, stopped after)."""
