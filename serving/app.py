"""HTTP service (`hymirec serve`): FastAPI + uvicorn.

    POST /recommend {user_id, k, exclude_seen} → items (raw ids), scores, interests (index per item; -1 = popular
         fallback), titles, model/index versions, per-stage latency (ms), mode + degraded flags
    GET  /live     process is up
    GET  /ready    artifacts loaded + checks of store, Triton and Milvus (200 when recommendations can be served,
                   possibly degraded; 503 before start-up finished)
    GET  /metrics  Prometheus text format

Every path but /live and /ready needs an API key when authentication is on, and all of them get the body-size
and rate limits (serving/guard.py, configured in serving/config.py). A valid request never gets a 5xx: a failing dependency degrades the answer (see serving/request_path.py). Invalid
requests get a 422 with one readable message per bad field.
"""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from serving.config import ServingConfig
from serving.guard import KeyRing, RateLimiter, RequestGuard
from serving.request_path import MODES, REASONS, RecommendPipeline

log = logging.getLogger(__name__)


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=256, description="raw user id")
    k: int = Field(default=10, ge=1, le=1000, description="number of items wanted")
    exclude_seen: bool = Field(default=True, description="drop the user's recent items")


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        buckets = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
        self.requests = Counter("hymirec_recommend_requests_total", "recommend requests by mode",
                                ["mode"], registry=self.registry)
        self.degraded = Counter("hymirec_recommend_degraded_total", "degraded recommend answers by reason",
                                ["reason"], registry=self.registry)
        self.invalid = Counter("hymirec_recommend_invalid_total", "rejected (4xx) requests", registry=self.registry)
        self.latency = Histogram("hymirec_recommend_seconds", "end-to-end recommend latency", buckets=buckets,
                                 registry=self.registry)
        self.stage = Histogram("hymirec_stage_seconds", "per-stage latency", ["stage"], buckets=buckets,
                               registry=self.registry)
        self.rejected = Counter("hymirec_guard_rejected_total", "requests stopped before a route, by reason",
                                ["reason"], registry=self.registry)
        self.up = Gauge("hymirec_dependency_up", "last /ready check per dependency", ["dependency"],
                        registry=self.registry)
        for mode in MODES:
            self.requests.labels(mode)
        for reason in REASONS:
            self.degraded.labels(reason)
        for reason in ("unauthorized", "rate_limited", "too_large", "bad_request"):
            self.rejected.labels(reason)

    def observe(self, result: dict) -> None:
        self.requests.labels(result["mode"]).inc()
        for reason in result["degraded_reasons"]:
            self.degraded.labels(reason).inc()
        for stage, ms in result["latency_ms"].items():
            if stage == "total":
                self.latency.observe(ms / 1000.0)
            else:
                self.stage.labels(stage).observe(ms / 1000.0)


def create_app(config: ServingConfig | None = None, pipeline: RecommendPipeline | None = None) -> FastAPI:
    config = config or ServingConfig.from_env()
    state = {"pipeline": pipeline or RecommendPipeline(config), "metrics": Metrics(), "started": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import anyio

        await anyio.to_thread.run_sync(state["pipeline"].start)
        state["started"] = True
        try:
            yield
        finally:
            state["started"] = False
            await anyio.to_thread.run_sync(state["pipeline"].close)

    app = FastAPI(title="HyMiRec recall", version="0.1.0", lifespan=lifespan)
    app.state.hymirec = state
    add_guard(app, config, state["metrics"])

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        state["metrics"].invalid.inc()
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{loc}: {err.get('msg', 'invalid')}")
        return JSONResponse(status_code=422, content={"error": "invalid request: " + "; ".join(problems),
                                                      "problems": problems})

    @app.post("/recommend")
    def recommend(req: RecommendRequest):
        result = state["pipeline"].recommend(req.user_id, req.k, req.exclude_seen)
        state["metrics"].observe(result)
        return result

    @app.get("/live")
    def live():
        return {"status": "live"}

    @app.get("/ready")
    def ready():
        if not state["started"]:
            return JSONResponse(status_code=503, content={"ready": False, "checks": {"artifacts": False}})
        checks = state["pipeline"].checks()
        for name, ok in checks.items():
            state["metrics"].up.labels(name).set(1.0 if ok else 0.0)
        degraded = [name for name, ok in checks.items() if not ok]
        return {"ready": True, "degraded": degraded, "checks": checks}

    @app.get("/metrics")
    def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(state["metrics"].registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/stages")
    def stages():
        return state["pipeline"].describe()

    return app


def add_guard(app: FastAPI, config: ServingConfig, metrics: Metrics) -> None:
    """Keys are read here, so a missing or bad key file stops start-up with a message naming it."""
    keys = None
    if config.auth_enabled():
        keys = KeyRing(config.api_keys_file, config.api_keys, config.api_keys_reload_s).load()
        log.info("API key authentication on: %d keys", len(keys))
    else:
        log.warning("API key authentication is off (HYMIREC_AUTH=%s, host %s): anyone who reaches the port can "
                    "call every endpoint", config.auth, config.host)
    limiter = RateLimiter(config.rate_limit_rps, config.rate_limit_burst) if config.rate_limit_rps > 0 else None
    app.add_middleware(RequestGuard, keys=keys, limiter=limiter, max_body_bytes=config.max_body_bytes,
                       on_reject=lambda reason: metrics.rejected.labels(reason).inc())


def serve(config: ServingConfig | None = None) -> None:
    """`hymirec serve`: run the app with uvicorn on config.host:config.port (default 127.0.0.1:8080)."""
    import uvicorn

    config = config or ServingConfig.from_env()
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="warning", access_log=False)


def recommend_once(user_id: str, k: int = 10, exclude_seen: bool = True, config: ServingConfig | None = None,
                   history_source=None) -> dict:
    """`hymirec recommend --user U`: the same pipeline in-process, once."""
    pipeline = RecommendPipeline(config or ServingConfig.from_env(), history_source=history_source).start()
    try:
        return pipeline.recommend(user_id, k, exclude_seen)
    finally:
        pipeline.close()


def format_result(result: dict) -> str:
    lines = [f"user {result['user_id']}  mode={result['mode']}"
             + (f" degraded={','.join(result['degraded_reasons'])}" if result["degraded"] else "")
             + f"  model={result['model_version']}  index={result['index_version']}"
             + f"  {result['latency_ms'].get('total', 0):.1f} ms"]
    for rank, (item, score, interest, title) in enumerate(
            zip(result["items"], result["scores"], result["interests"], result["titles"]), 1):
        src = "popular" if interest < 0 else f"interest {interest}"
        lines.append(f"  {rank:>3}. {item:<16} {score:+.4f}  [{src}]  {title[:70]}")
    return "\n".join(lines)
