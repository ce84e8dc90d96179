"""What every request passes before it reaches a route: API-key check, per-key rate limit, body-size limit.

One pure ASGI middleware (no BaseHTTPMiddleware: that one would buffer bodies it does not need and wrap errors in
its own task group). `/live` and `/ready` stay open so the kubelet's probes need no key; every other path
(`/recommend`, `/stages`, `/metrics`, `/docs`, `/openapi.json`, unknown paths) goes through the same check.

Keys come from a file or a directory (a mounted Kubernetes Secret: every file in it, one key per line) and from
HYMIREC_API_KEYS (comma separated). Several keys are accepted at once, so a key is rotated by adding the new one,
moving clients, then removing the old one; the file is re-read when it changes, no restart needed.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import time
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/live", "/ready"})
MIN_KEY_CHARS = 16  # a short key is guessable over the network, rate limit or not
MISSING_KEY = "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


class KeyConfigError(ValueError):
    """The API keys cannot be read or one of them is unusable (the message names the file and line, never the key)."""


def _digest(raw: bytes) -> bytes:
    # Comparing fixed-length digests keeps even the key's length out of the timing of compare_digest.
    return hashlib.sha256(raw).digest()


def _keys_from_text(text: str, where: str) -> list[str]:
    keys = []
    for n, line in enumerate(text.splitlines(), 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if len(key) < MIN_KEY_CHARS or not key.isascii() or any(c.isspace() for c in key):
            raise KeyConfigError(f"API key at {where} line {n} is unusable: keys need {MIN_KEY_CHARS}+ ASCII "
                                 "characters without spaces")
        keys.append(key)
    return keys


def _key_files(path: Path) -> list[Path]:
    if path.is_dir():
        # A mounted Secret holds the keys as files plus hidden ..data/..timestamp entries used for atomic swaps.
        return sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
    return [path]


class KeyRing:
    """The accepted keys as SHA-256 digests; match() compares against every one in constant time."""

    def __init__(self, path: str | os.PathLike | None = None, inline: tuple[str, ...] = (),
                 reload_every_s: float = 5.0):
        self.path = Path(path) if path else None
        self.inline = tuple(inline)
        self.reload_every_s = reload_every_s
        self._digests: dict[bytes, str] = {}
        self._signature = None
        self._checked_at = 0.0

    def load(self) -> "KeyRing":
        """Read the keys now; raises KeyConfigError naming what is wrong (used at start-up)."""
        keys = _keys_from_text("\n".join(self.inline), "HYMIREC_API_KEYS")
        signature = None
        if self.path is not None:
            if not self.path.exists():
                raise KeyConfigError(f"API keys file {self.path} does not exist (HYMIREC_API_KEYS_FILE)")
            files = _key_files(self.path)
            signature = self._stat(files)
            for f in files:
                keys += _keys_from_text(f.read_text(encoding="utf-8", errors="replace"), str(f))
        if not keys:
            where = f"{self.path}" if self.path else "HYMIREC_API_KEYS"
            raise KeyConfigError(f"no API keys in {where}: add one key per line")
        # The id (first 8 hex digits of the key's SHA-256) names a key in rate limits and logs without revealing it.
        self._digests = {_digest(k.encode()): "key:" + hashlib.sha256(k.encode()).hexdigest()[:8] for k in keys}
        self._signature = signature
        self._checked_at = time.monotonic()
        return self

    @staticmethod
    def _stat(files: list[Path]):
        out = []
        for f in files:
            st = f.stat()  # follows the Secret's symlinks: a swapped key file has a new inode and mtime
            out.append((f.name, st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def __len__(self) -> int:
        return len(self._digests)

    def refresh(self) -> None:
        """Re-read the file when it changed (checked at most every reload_every_s); a bad new file keeps the old
        keys so a half-written rotation never locks every client out."""
        now = time.monotonic()
        if self.path is None or now - self._checked_at < self.reload_every_s:
            return
        self._checked_at = now
        try:
            if self._stat(_key_files(self.path)) == self._signature:
                return
            old = len(self._digests)
            self.load()
            log.warning("API keys reloaded from %s: %d keys (was %d)", self.path, len(self._digests), old)
        except (OSError, KeyConfigError) as exc:
            log.warning("API keys at %s not reloaded, keeping the %d current keys: %s",
                        self.path, len(self._digests), exc)

    def match(self, presented: bytes) -> str | None:
        """The key id when `presented` is one of the keys, else None. Every key is compared (no early exit)."""
        got = _digest(presented)
        found = None
        for digest, key_id in self._digests.items():
            if hmac.compare_digest(got, digest):
                found = key_id
        return found


class RateLimiter:
    """Token bucket per caller: `rate` requests per second on average, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: int, max_callers: int = 10_000):
        self.rate, self.burst, self.max_callers = float(rate), float(burst), max_callers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, caller: str, now: float | None = None) -> float:
        """0 when the request may go on (one token spent), else the seconds until a token is available."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(caller, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[caller] = (tokens, now)
        # Without keys callers are client addresses: bound the table, dropping the least recently seen.
        while len(self._buckets) > self.max_callers:
            self._buckets.popitem(last=False)
        return wait


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


def presented_key(scope) -> bytes | None:
    auth = _header(scope, b"authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            return token.strip()
    key = _header(scope, b"x-api-key")
    return key.strip() if key and key.strip() else None


class RequestGuard:
    """ASGI middleware: 401 without a valid key, 429 (Retry-After) over the caller's rate, 413 over the body
    limit, in that order, so an unauthenticated caller can spend neither tokens nor buffer memory."""

    def __init__(self, app, keys: KeyRing | None, limiter: RateLimiter | None, max_body_bytes: int,
                 on_reject=None):
        self.app, self.keys, self.limiter, self.max_body_bytes = app, keys, limiter, max_body_bytes
        self.on_reject = on_reject or (lambda reason: None)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        if self.keys is not None:
            self.keys.refresh()
            key = presented_key(scope)
            caller = self.keys.match(key) if key is not None else None
            if caller is None:
                return await self._reject(send, 401, "unauthorized", MISSING_KEY if key is None else "invalid API key",
                                          [(b"www-authenticate", b'Bearer realm="hymirec"')])
        else:
            caller = "client:" + str((scope.get("client") or ("unknown",))[0])
        if self.limiter is not None:
            wait = self.limiter.take(caller)
            if wait > 0:
                retry = max(1, math.ceil(wait))
                return await self._reject(send, 429, "rate_limited",
                                          f"rate limit exceeded ({self.limiter.rate:g} requests/s, burst "
                                          f"{int(self.limiter.burst)}): retry after {retry} s",
                                          [(b"retry-after", str(retry).encode())])
        too_large = (f"request body larger than {self.max_body_bytes} bytes "
                     "(serving config max_body_bytes, HYMIREC_MAX_BODY_BYTES)")
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                return await self._reject(send, 400, "bad_request", "Content-Length is not a number")
            if int(length) > self.max_body_bytes:
                return await self._reject(send, 413, "too_large", too_large)
        # Chunked bodies have no length up front: read up to the limit, then replay what was read to the app.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                return await self._reject(send, 413, "too_large", too_large)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _reject(self, send, status: int, reason: str, message: str, headers=()):
        self.on_reject(reason)
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *headers]})
        await send({"type": "http.response.body", "body": body})
