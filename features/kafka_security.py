"""Kafka link security shared by the processor, the producer, replay and create-topics: TLS (SSL) and SASL
(SCRAM-SHA-256/512, PLAIN) over kafka-python's client options.

    HYMIREC_KAFKA_SECURITY_PROTOCOL   PLAINTEXT (default) | SSL | SASL_PLAINTEXT | SASL_SSL
    HYMIREC_KAFKA_SASL_MECHANISM      SCRAM-SHA-512 (default with SASL) | SCRAM-SHA-256 | PLAIN
    HYMIREC_KAFKA_USERNAME            SASL user
    HYMIREC_KAFKA_PASSWORD            SASL password: from the environment (a Secret) only, never a flag, since
                                      command lines show in process listings
    HYMIREC_KAFKA_SSL_CAFILE          PEM file of the CA that signed the brokers' certificates (default: the
                                      system's CAs); broker host names are always checked

The password never appears in repr(), errors or logs: :meth:`KafkaSecurity.scrub` replaces it in any text that
leaves this process.
"""
from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

from .item_codes import StreamConfigError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
ENV = {"protocol": "HYMIREC_KAFKA_SECURITY_PROTOCOL", "sasl_mechanism": "HYMIREC_KAFKA_SASL_MECHANISM",
       "username": "HYMIREC_KAFKA_USERNAME", "password": "HYMIREC_KAFKA_PASSWORD",
       "ssl_cafile": "HYMIREC_KAFKA_SSL_CAFILE"}


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "KafkaSecurity":
        """Values from the environment; ``overrides`` (command-line flags) win when not None."""
        env = os.environ if env is None else env
        values = {k: env.get(name) or None for k, name in ENV.items()}
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["protocol"] = (values["protocol"] or "PLAINTEXT").upper()
        return cls(**values).validate()

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def validate(self) -> "KafkaSecurity":
        if self.protocol not in PROTOCOLS:
            raise StreamConfigError(f"Kafka security protocol must be one of {', '.join(PROTOCOLS)}, "
                                    f"not {self.protocol!r}")
        if self.sasl:
            mech = (self.sasl_mechanism or SASL_MECHANISMS[0]).upper()
            if mech not in SASL_MECHANISMS:
                raise StreamConfigError(f"SASL mechanism must be one of {', '.join(SASL_MECHANISMS)}, not {mech!r}")
            missing = [ENV[k] for k in ("username", "password") if not getattr(self, k)]
            if missing:
                raise StreamConfigError(f"{self.protocol} needs {' and '.join(missing)} set")
            if mech != self.sasl_mechanism:
                return replace(self, sasl_mechanism=mech)
        if self.ssl_cafile is not None and not self.tls:
            raise StreamConfigError(f"a CA file is set but the security protocol {self.protocol} does not use TLS")
        if self.ssl_cafile is not None and not Path(self.ssl_cafile).is_file():
            raise StreamConfigError(f"Kafka CA file {self.ssl_cafile} does not exist")
        return self

    def client_kwargs(self) -> dict[str, Any]:
        """kafka-python options for KafkaConsumer / KafkaProducer / KafkaAdminClient."""
        kw: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            kw["ssl_check_hostname"] = True
            if self.ssl_cafile:
                kw["ssl_cafile"] = self.ssl_cafile
        if self.sasl:
            kw.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username,
                      sasl_plain_password=self.password)
        return kw

    def describe(self) -> str:
        """How the link is secured, for error messages (no secret)."""
        if not self.sasl:
            return self.protocol
        return f"{self.protocol} ({self.sasl_mechanism} as user {self.username!r})"

    def scrub(self, text: str) -> str:
        return text.replace(self.password, "***") if self.password else text


class _LastFailure(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reasons: dict[str, None] = {}  # distinct reasons, in order (a dict keeps insertion order)

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "failed: " in msg:
            reason = re.sub(r" \(backoff [\d.]+ secs\)$", "", msg.split("failed: ", 1)[1])
            self.reasons.pop(reason, None)
            self.reasons[reason] = None

    @property
    def text(self) -> str | None:
        # the last three distinct reasons: a refused login is often followed by a plain "socket disconnected"
        return " | ".join(list(self.reasons)[-3:]) or None


_LAST = _LastFailure()


@contextmanager
def remember_broker_failures() -> Iterator[None]:
    """While connecting, keep kafka-python's last connection failure (SASL authentication failed, certificate
    verify failed, ...): its exception only says "Unable to bootstrap", and connect_error adds the reason."""
    logger = logging.getLogger("kafka")
    _LAST.reasons = {}
    logger.addHandler(_LAST)
    try:
        yield
    finally:
        logger.removeHandler(_LAST)


def connect_error(bootstrap: str, security: KafkaSecurity, exc: BaseException) -> StreamConfigError:
    """A StreamConfigError naming the broker, how the link is secured (TLS, SASL user) and the broker's last
    refusal, never the password. The cause is dropped: kafka-python's exception chain could carry the client's
    options."""
    text = security.scrub(f"{type(exc).__name__}: {exc}")
    if _LAST.text:
        text += f"; last connection error: {security.scrub(_LAST.text)}"
    hint = " (check the user, password, mechanism and CA file)" if security.protocol != "PLAINTEXT" else ""
    return StreamConfigError(f"cannot connect to Kafka at {bootstrap} over {security.describe()}{hint}: {text}")


def security_kwargs(security: KafkaSecurity | None) -> dict[str, Any]:
    return {} if security is None else security.client_kwargs()
