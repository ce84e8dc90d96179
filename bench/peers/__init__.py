"""Peer libraries in the quality benchmark: split export, runners in their own venvs, scoring (docs/peers.md)."""
