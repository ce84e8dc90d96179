"""Online store of user code histories and item codes (interface + Feast-SQLite / Feast-Redis backends)."""
from .base import (CodebookMismatch, OnlineStore, StateEvent, StoreError, UserState, apply_events, pack_codes,
                   unpack_codes)
from .config import STORE_TYPES, StoreConfig, StoreConfigError, open_store

__all__ = ["CodebookMismatch", "OnlineStore", "StateEvent", "StoreError", "UserState", "apply_events", "pack_codes",
           "unpack_codes", "STORE_TYPES", "StoreConfig", "StoreConfigError", "open_store"]
