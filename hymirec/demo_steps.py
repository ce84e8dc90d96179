"""The demo's platform steps after training: stream → export → index + Triton → recommendations.

Each step uses the real component: a Kafka broker (tools/kafka/kafka.sh), the Feast SQLite online store,
ONNX export with its parity check, a Triton model repository served by the real tritonserver, and a
Milvus standalone server with the item index. Everything listens on loopback and is stopped at the end.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def store_config_file(run_dir: str) -> Path:
    """The online-store config the processor writes with and serving reads with (Feast SQLite)."""
    path = Path(run_dir) / "store.yaml"
    online = (Path(run_dir) / "online").resolve()
    path.write_text(f"type: sqlite\nsqlite_path: {online / 'online.db'}\nregistry_path: {online / 'registry.db'}\n")
    return path


def stream_step(run_dir: str, dataset: str) -> None:
    """Start Kafka, replay the dataset's interactions, run the processor until caught up, show a user."""
    from features.producer import create_topics, replay
    from features.store import StoreConfig, open_store
    from features.item_codes import load_item_codes, write_item_codes
    from features.stream import StreamConfig
    from features.stream_cli import run_processor
    from serving.triton_server import free_port
    from training.data import load_dataset

    print("== 2. streaming: Kafka → stream processor → Feast online store (SQLite)")
    kafka_dir = Path(run_dir).resolve() / "kafka"
    port = free_port()
    kafka = [str(ROOT / "tools/kafka/kafka.sh")]
    bootstrap = subprocess.run(kafka + ["start", "--port", str(port), "--dir", str(kafka_dir)], check=True,
                               capture_output=True, text=True).stdout.strip().splitlines()[-1]
    try:
        print(f"kafka broker ready at {bootstrap}")
        store_cfg = StoreConfig.from_file(store_config_file(run_dir))
        store = open_store(store_cfg)
        try:
            ids, codes = load_item_codes(run_dir)
            write_item_codes(store, ids, codes)
            print(f"item codes of {len(ids)} items written to the online store")
        finally:
            store.close()
        # = hymirec stream create-topics: the broker does not create topics on first use
        topics = create_topics(bootstrap, "interactions", partitions=4, replication=1)
        print(f"topics {topics['created'] + topics['existing']} ({topics['partitions']} partitions)")
        published = replay(load_dataset(dataset), bootstrap, topic="interactions")
        print(f"replayed {json.dumps(published)}")
        totals = run_processor(StreamConfig(bootstrap=bootstrap, topic="interactions", idle_exit_s=3.0),
                               store_cfg, run_dir, install_signals=False)
        print(f"processor: {totals.events_in} events in, {totals.applied} applied, {totals.skipped} skipped, "
              f"DLQ {dict(totals.dlq)}")
        store = open_store(store_cfg, apply=False)
        try:
            user = _demo_users(run_dir)[0]
            state = store.read_users([user])[user]
            print(f"user {user}: long history of {state.codes.shape[0]} items stored as {state.codes.shape[1]} codes "
                  f"each ({state.codes.nbytes} bytes); last codes {state.codes[-2:].tolist()}; "
                  f"recent items {list(state.recent_items)[-5:]}")
        finally:
            store.close()
    finally:
        subprocess.run(kafka + ["stop", "--dir", str(kafka_dir)], check=False)


def export_step(run_dir: str, dataset: str) -> None:
    from training.export.onnx_export import export_run
    from training.export.triton_repo import build_run_repo

    print("== 3. export: ONNX lightweight encoder + LLM recommender (parity-checked), Triton repository")
    manifest = export_run(run_dir, n_cases=100)
    for name, parity in manifest["parity"].items():
        print(f"{name}.onnx: {parity['n_cases']} parity cases, max |onnx - torch| {parity['max_abs_diff']:.1e} "
              f"(tolerance {parity['atol']:.0e})")
    repo = build_run_repo(run_dir)
    print(f"Triton model repository {repo['repo']}: model '{repo['model']}' versions {repo['versions']}")


def serve_step(run_dir: str, dataset: str) -> None:
    from dataclasses import replace

    from core.artifacts import RunLayout
    from serving.app import recommend_once
    from serving.config import ServingConfig
    from serving.index import build_run_index
    from serving.triton_server import TritonServer
    from devservices.milvus_standalone import MilvusStandalone

    print("== 4. serving: Milvus index, tritonserver, Feast read → ONNX encoder → Triton LLM → one ANN search")
    layout = RunLayout.at(run_dir)
    # The served index lives in the real Milvus standalone server (as in production; loopback only, stopped at
    # the end). The Milvus Lite file <run_dir>/milvus.db gets the same vectors for the `query it` commands below,
    # which need no running server.
    milvus = MilvusStandalone(layout.root / "milvus-server").start()
    server = None
    try:
        index = build_run_index(run_dir, milvus.uri)
        print(f"Milvus {milvus.uri} (standalone 2.3.5, started in {milvus.startup_seconds:.1f}s): collection "
              f"{index.collection} (alias {index.alias}), {index.n_items} item vectors, dim {index.dim}, "
              f"built in {index.seconds:.1f}s")
        build_run_index(run_dir)
        server = TritonServer(layout.triton_repo / "local", ["llm"]).start()
        labels = _interest_labels(run_dir, dataset)
        print(f"tritonserver ready in {server.ready_seconds:.1f}s at {server.grpc_url}")
        # the quota merge: each of the K interests is guaranteed k // K of the k slots (ServingConfig.merge)
        config = replace(ServingConfig.from_env(), artifact_dir=layout.root, triton_url=server.grpc_url,
                         milvus_uri=milvus.uri, feast_repo=str(store_config_file(run_dir)), merge="quota")
        for user in _demo_users(run_dir):
            print(format_with_interests(recommend_once(user, 10, True, config), labels))
    finally:
        if server is not None:
            server.stop()
        milvus.stop()


def _interest_labels(run_dir: str, dataset: str) -> dict:
    """raw item id → its interest labels (synthetic: the planted topic; MovieLens: genres), and each user's
    interests in their last 10 items."""
    import numpy as np

    from core.artifacts import RunLayout
    from training.interest_labels import item_interest_labels
    from training.train import load_run_data

    data = load_run_data(dataset)
    labels = item_interest_labels(data, codebook=np.load(RunLayout.at(run_dir).item_codes))
    of_item = {raw: [labels.names[j] for j in np.flatnonzero(labels.matrix[i])] for i, raw in enumerate(data.item_ids)}
    recent = {user: sorted({n for i in seq[-10:] for n in of_item[data.item_ids[i]]})
              for user, seq in zip(data.user_ids, data.sequences)}
    return {"item": of_item, "recent": recent, "source": labels.source}


def format_with_interests(result: dict, labels: dict) -> str:
    """One served list, each item with the model interest that retrieved it and its labels (topic / genres)."""
    wanted = labels["recent"].get(result["user_id"], [])
    shown = sorted({n for item in result["items"] for n in labels["item"].get(item, [])})
    lines = [f"user {result['user_id']}  mode={result['mode']}  {result['latency_ms'].get('total', 0):.1f} ms  "
             f"interests in the last 10 items: {', '.join(wanted)}; the list covers "
             f"{len(set(wanted) & set(shown))} of those {len(wanted)}"]
    for rank, (item, score, interest, title) in enumerate(
            zip(result["items"], result["scores"], result["interests"], result["titles"]), 1):
        source = "popular" if interest < 0 else f"interest {interest}"
        lines.append(f"  {rank:>3}. {item:<8} {score:+.4f}  [{source}]  {title[:40]:<40}  "
                     f"{', '.join(labels['item'].get(item, []))}")
    return "\n".join(lines)


def _demo_users(run_dir: str) -> list[str]:
    """A long-history user (≥ 1,000 items in the synthetic data) and two ordinary ones."""
    users = json.loads((Path(run_dir) / "demo_users.json").read_text())
    return users[:3]


STEPS = [stream_step, export_step, serve_step]
