"""Start the serving stack pieces for tests and the benchmark: the Milvus standalone server with the run's item
index, and the app on uvicorn (in a thread) wired to given Triton / Milvus / store endpoints."""
from __future__ import annotations


def start_milvus_with_index(serving_run, data_dir, index_type: str = "FLAT"):
    """FLAT (exact) by default so tests can compare with a brute-force ranking; serving's default is HNSW."""
    import numpy as np

    from serving.index import ItemIndex
    from devservices.milvus_standalone import MilvusStandalone

    server = MilvusStandalone(data_dir).start()
    index = ItemIndex(server.uri, index_type=index_type).start(load=False)
    try:
        index.build(np.load(serving_run["layout"].item_vectors))
    finally:
        index.close()
    return server


def make_app_server(serving_run, triton_url, milvus_uri, store_cfg):
    from serving.app import create_app
    from serving.config import ServingConfig
    from devservices.app import AppServer

    config = ServingConfig(artifact_dir=serving_run["layout"].root, triton_url=triton_url, milvus_uri=milvus_uri,
                           feast_repo=store_cfg, breaker_cooldown_s=0.5)
    return AppServer(create_app(config)).start()
