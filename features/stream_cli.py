"""Entry points of the stream layer: ``hymirec stream run | replay | show | create-topics`` and
``python -m features.stream_cli``.

Exit codes: 0 done, 1 runtime failure (store or DLQ unavailable after retries), 2 bad configuration (unknown store
type, no broker reachable, unreadable item-codes table). Nothing is written when the configuration is bad.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Callable, Sequence

import numpy as np

from .item_codes import ItemCodeMapper, StreamConfigError, load_codebook
from .store.base import StoreError
from .store.config import StoreConfig, StoreConfigError
from .stream import DEFAULT_BOOTSTRAP, DEFAULT_TOPIC, BatchResult, DLQError, StreamConfig, StreamProcessor, probe_bootstrap
from .stream_health import DEFAULT_STALL_S

log = logging.getLogger("hymirec.stream")

def _load_embeddings(path: str | None) -> dict[str, np.ndarray] | None:
    if not path:
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            ids, emb = [str(i) for i in z["item_ids"]], np.asarray(z["embeddings"], dtype=np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise StreamConfigError(f"cannot read item embeddings from {path}: {exc}") from exc
    return dict(zip(ids, emb))


def run_processor(config: StreamConfig, store_config: StoreConfig, item_codes: str | os.PathLike | None,
                  codebook: str | None = None, new_item_embeddings: str | None = None,
                  install_signals: bool = True, release_root: str | os.PathLike | None = None,
                  release_poll_s: float = 1.0) -> BatchResult:
    """Validate the configuration (nothing written when it is bad), open the store and run the processor.
    With ``release_root`` the item codes and codebook are the current release's, followed across registry flips
    (features/stream_release.py); else ``item_codes`` (and ``codebook``) for the processor's whole life."""
    config.validate()
    store_config.validate()
    probe_bootstrap(config.bootstrap)
    release = None
    if release_root:
        from .stream_release import ReleaseTracker
        release = ReleaseTracker(release_root, release_poll_s, _load_embeddings(new_item_embeddings))
        mapper = release.start()
    elif item_codes:
        mapper = ItemCodeMapper.from_path(item_codes, load_codebook(codebook), _load_embeddings(new_item_embeddings))
    else:
        raise StreamConfigError("no item codes: give --item-codes or --release-root")
    from .store.config import open_store
    store = open_store(store_config, apply=False)
    try:
        if store_config.type == "redis":
            store.ping()
        store.apply()
        proc = StreamProcessor(config, store, mapper, release=release)
        if install_signals:
            proc.install_signal_handlers()
        totals = proc.run()
        log.info("done: %s", proc.metrics.snapshot())
        return totals
    finally:
        store.close()


def _store_config(args: argparse.Namespace) -> StoreConfig:
    if getattr(args, "store_config", None):
        cfg = StoreConfig.from_file(args.store_config)
        over = {k: v for k, v in (("type", args.store), ("sqlite_path", args.sqlite_path),
                                  ("redis_url", args.redis_url)) if v}
        return StoreConfig.from_mapping({**cfg.as_dict(), **over})
    return StoreConfig.from_env(type=args.store, sqlite_path=args.sqlite_path, redis_url=args.redis_url)


def _add_kafka_security_args(p: argparse.ArgumentParser) -> None:
    # The SASL user and password come from HYMIREC_KAFKA_USERNAME / HYMIREC_KAFKA_PASSWORD only (a Secret in the
    # chart): a --password flag would show in process listings.
    p.add_argument("--security-protocol", help="PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL "
                                               "[HYMIREC_KAFKA_SECURITY_PROTOCOL]")
    p.add_argument("--sasl-mechanism", help="SCRAM-SHA-512 | SCRAM-SHA-256 | PLAIN [HYMIREC_KAFKA_SASL_MECHANISM]")
    p.add_argument("--ssl-cafile", help="CA certificate (PEM) of the brokers [HYMIREC_KAFKA_SSL_CAFILE]")


def _security(args: argparse.Namespace):
    from .kafka_security import KafkaSecurity
    return KafkaSecurity.from_env(protocol=args.security_protocol and args.security_protocol.upper(),
                                  sasl_mechanism=args.sasl_mechanism, ssl_cafile=args.ssl_cafile)


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="online store type: sqlite (default) or redis [HYMIREC_STORE_TYPE]")
    p.add_argument("--sqlite-path", help="SQLite online store file [HYMIREC_SQLITE_PATH]")
    p.add_argument("--redis-url", help="Redis host:port [HYMIREC_REDIS_URL]")
    p.add_argument("--store-config", help="YAML/JSON store config (type, sqlite_path, redis_url, ...)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hymirec stream", description="Kafka → codes → online store")
    sub = parser.add_subparsers(dest="command", required=True)
    env_boot = os.environ.get("HYMIREC_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP)
    env_topic = os.environ.get("HYMIREC_TOPIC", DEFAULT_TOPIC)

    run = sub.add_parser("run", help="run the stream processor")
    run.add_argument("--bootstrap", default=env_boot, help="Kafka host:port [HYMIREC_KAFKA_BOOTSTRAP]")
    run.add_argument("--topic", default=env_topic)
    run.add_argument("--dlq-topic", default=None, help="default <topic>.dlq")
    run.add_argument("--group", default="hymirec-stream")
    run.add_argument("--group-instance-id", default=None)
    run.add_argument("--item-codes", default=None, help="run dir, .npz or .parquet item-codes table (needed "
                                                        "without --release-root)")
    run.add_argument("--release-root", default=os.environ.get("HYMIREC_RELEASE_ROOT") or None,
                     help="artifact root whose registry names the current release: its item codes and codebook "
                          "are used and followed across promotes and rollbacks [HYMIREC_RELEASE_ROOT]")
    run.add_argument("--release-poll-s", type=float, default=1.0, help="how often the registry is checked")
    run.add_argument("--codebook", default=None, help="codebook.npz to encode unknown items")
    run.add_argument("--new-item-embeddings", default=None, help=".npz (item_ids, embeddings) of new items")
    run.add_argument("--max-poll-records", type=int, default=500)
    run.add_argument("--session-timeout-ms", type=int, default=10000)
    run.add_argument("--heartbeat-ms", type=int, default=3000)
    run.add_argument("--max-poll-interval-ms", type=int, default=300000,
                     help="also the rebalance timeout: how long a rebalance waits for a silent member")
    run.add_argument("--metrics-port", type=int, default=None, help="serve /metrics, /live, /ready on this port")
    run.add_argument("--liveness-stall-s", type=float, default=DEFAULT_STALL_S,
                     help="/live fails after this many seconds without progress while the lag is > 0")
    run.add_argument("--store-retry-s", type=float, default=60.0,
                     help="retry a failed store call (with backoff) this long before exiting 1")
    run.add_argument("--unknown-recheck-s", type=float, default=10.0,
                     help="an item found neither in --item-codes nor among the codes the refresh DAG published to "
                          "the store is looked up again after this many seconds")
    run.add_argument("--idle-exit", type=float, default=None, help="exit when caught up and idle this long (s)")
    run.add_argument("--max-runtime", type=float, default=None)
    run.add_argument("--no-key-check", action="store_true", help="do not require key == user_id")
    _add_store_args(run)
    _add_kafka_security_args(run)

    rep = sub.add_parser("replay", help="publish a dataset's interactions in time order")
    rep.add_argument("--dataset", required=True, help="dataset name or path (training.data.load_dataset)")
    rep.add_argument("--bootstrap", default=env_boot)
    rep.add_argument("--topic", default=env_topic)
    rep.add_argument("--limit", type=int, default=None)
    rep.add_argument("--rate", type=float, default=None, help="events per second (default: as fast as possible)")
    _add_kafka_security_args(rep)

    top = sub.add_parser("create-topics", help="create the events topic and its DLQ (auto-creation is off)")
    top.add_argument("--bootstrap", default=env_boot)
    top.add_argument("--topic", default=env_topic)
    top.add_argument("--dlq-topic", default=None, help="default <topic>.dlq")
    top.add_argument("--partitions", type=int, default=4,
                     help="partitions per topic: the most consumers that can share the work (default 4)")
    top.add_argument("--replication-factor", type=int, default=1,
                     help="copies of each partition (1 on a single broker; 3 in production)")
    _add_kafka_security_args(top)

    show = sub.add_parser("show", help="print a user's stored history")
    show.add_argument("--user", required=True)
    _add_store_args(show)
    return parser


def main(argv: Sequence[str] | None = None, load_dataset: Callable[[str], Any] | None = None) -> int:
    """``hymirec stream ...``. ``load_dataset`` (name/path → dataset) is needed by ``replay`` only; the
    ``hymirec`` CLI passes training's loader, since features does not import training."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("HYMIREC_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        if args.command == "run":
            cfg = StreamConfig(bootstrap=args.bootstrap, topic=args.topic, dlq_topic=args.dlq_topic,
                               group_id=args.group, group_instance_id=args.group_instance_id,
                               max_poll_records=args.max_poll_records, session_timeout_ms=args.session_timeout_ms,
                               heartbeat_interval_ms=args.heartbeat_ms,
                               max_poll_interval_ms=args.max_poll_interval_ms, metrics_port=args.metrics_port,
                               idle_exit_s=args.idle_exit, max_runtime_s=args.max_runtime,
                               check_key=not args.no_key_check, liveness_stall_s=args.liveness_stall_s,
                               store_retry_s=args.store_retry_s, unknown_recheck_s=args.unknown_recheck_s,
                               security=_security(args))
            totals = run_processor(cfg, _store_config(args), args.item_codes, args.codebook,
                                   args.new_item_embeddings, release_root=args.release_root,
                                   release_poll_s=args.release_poll_s)
            print(json.dumps({"events_in": totals.events_in, "applied": totals.applied,
                              "skipped": totals.skipped, "dlq": dict(totals.dlq)}), flush=True)
        elif args.command == "replay":
            from .producer import replay
            if load_dataset is None:
                raise StreamConfigError("replay needs a dataset loader: run it as `hymirec stream replay`")
            probe_bootstrap(args.bootstrap)
            security = _security(args)
            out = replay(load_dataset(args.dataset), args.bootstrap, topic=args.topic, limit=args.limit, rate=args.rate,
                         security=security)
            print(json.dumps(out), flush=True)
        elif args.command == "create-topics":
            from .producer import create_topics
            probe_bootstrap(args.bootstrap)
            print(json.dumps(create_topics(args.bootstrap, args.topic, args.partitions, args.replication_factor,
                                           args.dlq_topic, security=_security(args))), flush=True)
        elif args.command == "show":
            from .store.config import open_store
            store = open_store(_store_config(args))
            try:
                st = store.read_users([args.user]).get(args.user)
                print(json.dumps(st.as_dict() if st else None), flush=True)
            finally:
                store.close()
        return 0
    except (StreamConfigError, StoreConfigError) as exc:
        print(f"hymirec stream: configuration error: {exc}", file=sys.stderr, flush=True)
        return 2
    except (StoreError, DLQError) as exc:
        print(f"hymirec stream: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1


def run_cli(argv: Sequence[str] | None = None) -> None:
    """``sys.exit(main(argv))``: a picklable process target (tests start processors in child processes)."""
    sys.exit(main(argv))


if __name__ == "__main__":  # pragma: no cover
    run_cli()
