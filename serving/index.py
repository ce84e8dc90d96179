"""Item index in Milvus: versioned collections behind one alias.

`build()` writes a *new* collection `<alias>_v<N>` (N = 1 + the highest existing), inserts the item vectors,
indexes and loads it, and only then points the alias at it (`create_alias` the first time, `alter_alias`
after: one atomic switch on the Milvus side). Searches always go through the alias, so readers see either the
old or the new index, never a half-built one. Older versions beyond `keep` are dropped afterwards.

URI: a Milvus Lite path (embedded, default; note that Milvus Lite makes a *directory* at that path and only
one process may open it) or a server URI `http://host:19530` (production, or `hymirec index server` here).
Token: a server with authentication needs one (user:password or API key); the chart passes it as
HYMIREC_MILVUS_TOKEN, which is the default here so that serving and the pipeline's index tasks both send it.
Searches read with Bounded consistency (a release changes the collection behind the alias; a served collection
only gains new items' rows, which may show a few seconds late: no search needs a time-tick wait, and Strong costs
200-400 ms per search on a Milvus server) and one call for all K interests (nq = K). `build()` checks its row count with Strong consistency, once.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PK, VEC = "id", "vec"
TOKEN_ENV = "HYMIREC_MILVUS_TOKEN"


class IndexUnavailable(RuntimeError):
    """Milvus could not be reached or the alias does not exist."""


@dataclass(frozen=True)
class IndexBuild:
    alias: str
    collection: str
    version: int
    n_items: int
    dim: int
    seconds: float


def is_server_uri(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "tcp://", "grpc://", "unix:"))


class ItemIndex:
    """No I/O until start()."""

    def __init__(self, uri: str, alias: str = "hymirec_items", *, index_type: str = "HNSW",
                 index_params: dict | None = None, search_params: dict | None = None, metric: str = "IP",
                 token: str | None = None, timeout_s: float = 5.0, keep: int = 2, consistency: str = "Bounded"):
        self.uri = str(uri)
        self.alias = alias
        self.index_type = index_type
        self.index_params = dict(index_params if index_params is not None else
                                 ({"M": 16, "efConstruction": 128} if index_type == "HNSW" else {}))
        self.search_params = dict(search_params or {})
        self.metric = metric
        # None: HYMIREC_MILVUS_TOKEN (the chart's Secret), so callers that only know a URI (the retrain DAG's
        # index tasks, build_run_index) authenticate too; "" sends no token.
        self.token = os.environ.get(TOKEN_ENV, "").strip() if token is None else token
        self.timeout_s = float(timeout_s)
        self.keep = int(keep)
        self.consistency = consistency
        self._client = None
        self._lock = threading.Lock()
        self._collection: str | None = None
        self._served_type: str | None = None  # index type of the collection behind the alias
        self._types: dict[str, str | None] = {}

    # -------------------------------------------------------------------------------------------- lifecycle
    def start(self, load: bool = True) -> "ItemIndex":
        from pymilvus import MilvusClient

        if self._client is None:
            if not is_server_uri(self.uri):
                Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
            self._client = MilvusClient(uri=self.uri, token=self.token, timeout=self.timeout_s)
        if load:
            self.refresh()
        return self

    @property
    def client(self):
        if self._client is None:
            raise IndexUnavailable("ItemIndex.start() was not called")
        return self._client

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001
                pass
            self._client = None

    def refresh(self) -> str | None:
        """Resolve the alias to its collection (and make sure it is loaded). None when there is no index yet."""
        collection = self._alias_target()
        if collection:
            state = self.client.get_load_state(collection)
            if "Loaded" not in str(state.get("state", state)):
                self.client.load_collection(collection)
            self._served_type = self._index_type_of(collection)
        self._collection = collection
        return collection

    def _index_type_of(self, collection: str) -> str | None:
        try:
            return str(self.client.describe_index(collection, VEC).get("index_type")) or None
        except Exception:  # noqa: BLE001
            return None

    @property
    def version(self) -> str | None:
        """The collection behind the alias (the index version)."""
        return self._collection

    def ping(self) -> bool:
        try:
            self.client.list_collections(timeout=self.timeout_s)
            return True
        except Exception:  # noqa: BLE001
            return False

    def _alias_target(self) -> str | None:
        """The collection the alias points to (None when the alias does not exist). Asked per versioned
        collection so that a missing alias is not an RPC error."""
        for _, name in reversed(self._versions()):
            aliases = self.client.list_aliases(name).get("aliases", [])
            if self.alias in aliases:
                return name
        return None

    # -------------------------------------------------------------------------------------------- build
    def _versions(self) -> list[tuple[int, str]]:
        pat = re.compile(re.escape(self.alias) + r"_v(\d+)$")
        out = []
        for name in self.client.list_collections():
            m = pat.match(name)
            if m:
                out.append((int(m.group(1)), name))
        return sorted(out)

    def build(self, vectors: np.ndarray, *, item_index: np.ndarray | None = None, batch: int = 20000,
              description: str = "", swap_alias: bool = True, keep_also: tuple[str, ...] = ()) -> IndexBuild:
        """Index `vectors` ([n_items+1, d], row i = item index i; row 0 and all-zero rows are skipped) into a
        new collection version and swap the alias to it (``swap_alias=False``: a release's collection, made
        current later by orchestration/releases.activate through :meth:`point_alias`)."""
        from pymilvus import DataType, MilvusClient

        started = time.perf_counter()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be [n, d], got {vectors.shape}")
        ids = np.arange(len(vectors), dtype=np.int64) if item_index is None else np.asarray(item_index, np.int64)
        keep = (ids > 0) & (np.abs(vectors).sum(1) > 0)
        ids, vectors = ids[keep], vectors[keep]
        dim = int(vectors.shape[1])
        existing = self._versions()
        version = existing[-1][0] + 1 if existing else 1
        name = f"{self.alias}_v{version}"
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                            description=description[:200])
        schema.add_field(PK, DataType.INT64, is_primary=True)
        schema.add_field(VEC, DataType.FLOAT_VECTOR, dim=dim)
        self.client.create_collection(name, schema=schema, consistency_level="Strong")
        try:
            for start in range(0, len(ids), batch):
                chunk = slice(start, start + batch)
                rows = [{PK: int(i), VEC: v} for i, v in zip(ids[chunk].tolist(), vectors[chunk])]
                self.client.insert(name, rows)
            self.client.flush(name)
            params = self.client.prepare_index_params()
            params.add_index(VEC, index_type=self.index_type, metric_type=self.metric, params=self.index_params)
            self.client.create_index(name, params)
            self.client.load_collection(name)
            count = self.client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
            n_rows = int(count[0]["count(*)"])
            if n_rows != len(ids):
                raise RuntimeError(f"{name}: {n_rows} rows after insert, expected {len(ids)}")
        except Exception:
            self.client.drop_collection(name)
            raise
        if swap_alias:
            self.point_alias(name)
        self.prune(keep_also=(name, *keep_also))
        return IndexBuild(self.alias, name, version, len(ids), dim, time.perf_counter() - started)

    def point_alias(self, collection: str) -> None:
        """Point the alias at ``collection`` (one atomic switch on the Milvus side); loads it first."""
        state = self.client.get_load_state(collection)
        if "Loaded" not in str(state.get("state", state)):
            self.client.load_collection(collection)
        with self._lock:
            if self._alias_target() == collection:
                pass
            elif self._alias_exists():
                self.client.alter_alias(collection, self.alias)
            else:
                self.client.create_alias(collection, self.alias)
            self._collection = collection
            self._served_type = self._index_type_of(collection)

    def prune(self, keep_also: tuple[str, ...] = ()) -> list[str]:
        """Drop versions beyond the newest ``keep``, never the one behind the alias nor ``keep_also``: the
        served release's collection and the one a rollback returns to stay searchable."""
        versions = self._versions()
        protected = {self._alias_target(), *keep_also}
        dropped = []
        for _, old in versions[:-self.keep] if self.keep > 0 else []:
            if old not in protected:
                self.client.drop_collection(old)
                dropped.append(old)
        return dropped

    def upsert(self, item_index: np.ndarray, vectors: np.ndarray, collection: str | None = None) -> int:
        """Insert or replace rows (item index → vector) in the collection behind the alias: new items between
        retrains (the codebook-refresh DAG). Searches see them within Milvus' Bounded staleness (5 s)."""
        ids = np.asarray(item_index, np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(ids) != len(vectors) or (len(ids) and ids.min() <= 0):
            raise ValueError(f"upsert needs ids > 0 and vectors [n, d] of the same length, got {ids.shape} and "
                             f"{vectors.shape}")
        collection = collection or self._alias_target()
        if collection is None:
            raise IndexUnavailable(f"alias {self.alias!r} does not exist: build the index first")
        if len(ids):
            self.client.upsert(collection, [{PK: int(i), VEC: v} for i, v in zip(ids.tolist(), vectors)])
        return len(ids)

    def _alias_exists(self) -> bool:
        return self._alias_target() is not None

    # -------------------------------------------------------------------------------------------- search
    def search(self, queries: np.ndarray, limit: int, collection: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One Milvus search for all queries (nq = K), through the alias or in ``collection`` by name (a request
        pinned to its release). Returns ids [K, limit] int64 (0 = no result) and scores [K, limit] float32
        (NaN = no result)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2:
            raise ValueError(f"queries must be [K, d], got {queries.shape}")
        limit = int(max(1, min(limit, 16384)))
        params = dict(self.search_params)
        served_type = self._served_type if collection is None else self._type_of_named(collection)
        if served_type == "HNSW":
            params["ef"] = max(int(params.get("ef", 64)), limit)  # HNSW needs ef >= top-k
        else:
            params.pop("ef", None)  # an HNSW knob; other index types have their own
        try:
            hits = self.client.search(collection or self.alias, data=queries, limit=limit, output_fields=[PK],
                                      search_params={"metric_type": self.metric, "params": params},
                                      consistency_level=self.consistency, timeout=self.timeout_s)
        except Exception as exc:  # noqa: BLE001
            raise IndexUnavailable(f"Milvus search failed: {exc}") from exc
        ids = np.zeros((len(queries), limit), np.int64)
        scores = np.full((len(queries), limit), np.nan, np.float32)
        for q, row in enumerate(hits):
            n = len(row)
            if n:
                ids[q, :n] = [h["id"] for h in row]
                scores[q, :n] = [h["distance"] for h in row]
        return ids, scores

    def _type_of_named(self, collection: str) -> str | None:
        types = self._types  # {collection: index type}, asked once per collection
        if collection not in types:
            self._types = {**types, collection: self._index_type_of(collection)}
        return self._types[collection]

    def search_each(self, queries: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """K separate searches (nq = 1 each): only for the benchmark comparison."""
        parts = [self.search(q[None], limit) for q in np.asarray(queries, np.float32)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def build_index(uri: str, vectors: np.ndarray, alias: str = "hymirec_items", swap_alias: bool = True,
                keep_also: tuple[str, ...] = (), **kwargs) -> IndexBuild:
    """`hymirec index build`: one new version of the item index from `vectors` (item_vectors.npy); older
    versions beyond ``keep`` are dropped, except the served one and ``keep_also`` (a rollback target)."""
    index = ItemIndex(uri, alias, **kwargs).start(load=False)
    try:
        return index.build(vectors, swap_alias=swap_alias, keep_also=tuple(keep_also))
    finally:
        index.close()


def build_run_index(run_dir: str, uri: str | None = None, alias: str = "hymirec_items", **kwargs) -> IndexBuild:
    from core.artifacts import RunLayout

    layout = RunLayout.at(run_dir)
    vectors = np.load(layout.item_vectors)
    return build_index(uri or str(layout.root / "milvus.db"), vectors, alias,
                       **kwargs)


def drop_all(uri: str, alias: str) -> None:
    """Drop the alias and every version of it (tests start from an empty server with it)."""
    index = ItemIndex(uri, alias).start(load=False)
    try:
        try:
            index.client.drop_alias(alias)
        except Exception:  # noqa: BLE001
            pass
        for _, name in index._versions():
            index.client.drop_collection(name)
    finally:
        index.close()
