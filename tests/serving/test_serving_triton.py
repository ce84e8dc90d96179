"""The real tritonserver returns what in-process ONNX Runtime returns for the same inputs."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.services


def _infer(client, arrays, model="llm"):
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, arr in arrays.items():
        t = grpcclient.InferInput(name, list(arr.shape), "FP32")
        t.set_data_from_numpy(arr)
        inputs.append(t)
    return client.infer(model, inputs)


def test_triton_equals_in_process_onnx(serving_run, triton_server):
    import tritonclient.grpc as grpcclient

    from training.export.onnx_export import llm_cases, ort_session

    d = serving_run["manifest"]["dims"]
    sess = ort_session(serving_run["layout"].llm_onnx)
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    worst = 0.0
    try:
        for case in llm_cases(d["n_coarse"], d["d_llm"], d["d_item"], n=25, seed=7, max_n=40):
            got = _infer(client, case).as_numpy("interests")
            ref = sess.run(None, case)[0]
            assert got.shape == ref.shape
            worst = max(worst, float(np.abs(got - ref).max()))
    finally:
        client.close()
    assert worst <= 1e-5, worst
    print(f"triton ready in {triton_server.ready_seconds:.2f}s; max |triton - ort| = {worst:.2e}")


def test_concurrent_requests_of_mixed_shapes_are_batched_correctly(serving_run, triton_server):
    """Dynamic batching stacks same-shape requests; every response must still match its own input."""
    from concurrent.futures import ThreadPoolExecutor

    import tritonclient.grpc as grpcclient

    from training.export.onnx_export import llm_cases, ort_session

    d = serving_run["manifest"]["dims"]
    sess = ort_session(serving_run["layout"].llm_onnx)
    cases = list(llm_cases(d["n_coarse"], d["d_llm"], d["d_item"], n=32, seed=11, max_batch=2, max_n=4))

    def one(case):
        c = grpcclient.InferenceServerClient(triton_server.grpc_url)
        try:
            return _infer(c, case).as_numpy("interests")
        finally:
            c.close()

    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(one, cases))
    for case, got in zip(cases, outs):
        np.testing.assert_allclose(got, sess.run(None, case)[0], atol=1e-5)
