"""Hypothesis over arbitrary JSON bodies, raw bytes and headers against the real app over HTTP (auth on, body
limit on): no answer is a 5xx and no answer shows internals (tracebacks, file paths, module names)."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.reliability import report_figures
from tests.serving.guard_helpers import API_KEYS

pytestmark = pytest.mark.services

ROOT = str(Path(__file__).resolve().parents[2])
# What would betray the implementation: a traceback, a source path, a module path, an exception's class name.
LEAKS = re.compile(r"Traceback|File \"|\.py\b|site-packages|/usr/|/home/|/tmp/|Error\(|Exception\b|0x[0-9a-f]{6,}")
# Headers httpx or the connection own; fuzzing them tests the HTTP library, not the app.
TRANSPORT = {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade", "te", "trailer",
             "keep-alive", "proxy-connection"}
TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=15)
# Bodies near the real shape reach the pipeline; the rest exercise validation and the JSON decoder.
recommend_like = st.fixed_dictionaries(
    {"user_id": st.one_of(st.sampled_from(["user3", "user7", "nobody"]), st.text(max_size=300), json_values)},
    optional={"k": st.one_of(st.integers(-5, 1200), json_values), "exclude_seen": json_values,
              "extra": json_values})
bodies = st.one_of(recommend_like.map(lambda b: json.dumps(b).encode()),
                   json_values.map(lambda b: json.dumps(b).encode()),
                   st.binary(max_size=300),
                   st.binary(min_size=4000, max_size=5000))  # around the 4096-byte limit
header_names = st.text(TOKEN, min_size=1, max_size=20).filter(lambda n: n.lower() not in TRANSPORT)
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                        max_size=60).map(str.strip)
# Mostly valid keys, so most requests get past the guard to the routes.
auth = st.sampled_from([{"Authorization": f"Bearer {API_KEYS[0]}"}] * 4 + [{"X-API-Key": API_KEYS[1]}] * 3
                       + [{}, {"Authorization": "Bearer"}, {"Authorization": "Bearer \xe9\xff"}])
content_types = st.sampled_from([{}, {"content-type": "application/json"}, {"content-type": "text/plain"},
                                 {"content-type": "application/json; charset=latin-1"},
                                 {"content-type": "multipart/form-data; boundary=x"}])
requests = st.tuples(st.sampled_from(["POST /recommend"] * 6 + ["GET /stages", "GET /ready", "PUT /recommend",
                                                                 "GET /recommend", "POST /live", "DELETE /x"]),
                     bodies, st.dictionaries(header_names, header_values, max_size=4), auth, content_types)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)


def _without_echo(text: str, body: bytes) -> str:
    """The answer minus what the request itself said (user ids and field names are echoed on purpose), longest
    first, so only what the server added is searched for leaks."""
    try:
        sent = sorted(set(_strings(json.loads(body))), key=len, reverse=True)
    except ValueError:
        return text
    for s in sent:
        if s:
            text = text.replace(json.dumps(s)[1:-1], "").replace(s, "")
    return text


@pytest.fixture(scope="module")
def client(guarded_server):
    with httpx.Client(base_url=guarded_server.url, timeout=30.0) as c:
        yield c


def test_fuzz_never_5xx_never_internals(client):
    seen: dict[int, int] = {}

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(requests)
    def one(req):
        target, body, headers, key, ctype = req
        method, path = target.split(" ")
        # Raw latin-1 bytes: what a client can put on the wire, beyond the ASCII httpx allows for str values.
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in {**headers, **ctype, **key}.items()]
        r = client.request(method, path, content=body, headers=raw)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (r.status_code, r.text[:500])
        text = _without_echo(r.text, body)
        assert ROOT not in text and not LEAKS.search(text), text[:500]

    t0 = time.monotonic()
    try:
        one()
    finally:  # bench/reliability.py's figures, a 5xx included (the record is refused for a failed run)
        report_figures("fuzz", requests=sum(seen.values()), status_5xx=sum(n for s, n in seen.items() if s >= 500),
                       statuses=dict(sorted(seen.items())), seconds=time.monotonic() - t0)
    print(f"fuzz: {sum(seen.values())} requests, status counts {dict(sorted(seen.items()))}")
    # The run reached both sides of the guard: served answers and rejections.
    assert seen.get(200) and seen.get(401) and seen.get(422), seen
