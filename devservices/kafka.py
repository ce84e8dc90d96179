"""A real single-node Apache Kafka broker (KRaft) for tests: jars from Maven Central via tools/kafka/pom.xml,
storage formatted with the Kafka storage tool, started by tools/kafka/kafka.sh on free loopback ports.

    with KafkaBroker(workdir) as broker:
        broker.bootstrap          # "127.0.0.1:PORT"
        broker.create_topic("t", partitions=4)

With ``tls_pem`` (a PEM file holding the broker's private key, its certificate and the CA chain) the broker also
listens with SASL_SSL (SCRAM-SHA-256/512) on ``secure_bootstrap``; users are added with :meth:`add_scram_user`
over the plaintext listener, which the fixture keeps for its own admin calls.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ._proc import free_port, port_open, stop_process, tail, wait_until

ROOT = Path(__file__).resolve().parents[1]
KAFKA_SH = ROOT / "tools" / "kafka" / "kafka.sh"


class KafkaUnavailable(RuntimeError):
    """Java or the broker jars are missing (run `make setup` / tools/setup.d/20-kafka.sh)."""


class KafkaBroker:
    def __init__(self, workdir: str | Path | None = None, partitions: int = 4, start_timeout: float = 90.0,
                 tls_pem: str | Path | None = None):
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kafka-"))
        self.partitions = partitions
        self.start_timeout = start_timeout
        self.port = free_port()
        self.controller_port = free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.tls_pem = Path(tls_pem) if tls_pem else None
        self.secure_port = free_port() if tls_pem else None
        self.secure_bootstrap = f"127.0.0.1:{self.secure_port}" if tls_pem else None
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def start(self) -> "KafkaBroker":
        if shutil.which("java") is None:
            raise KafkaUnavailable("java not found (Java 17 is needed for the Kafka broker)")
        jars = subprocess.run(["bash", str(KAFKA_SH), "jars"], capture_output=True, text=True)
        if jars.returncode != 0:
            raise KafkaUnavailable(f"kafka jars could not be resolved: {jars.stderr[-2000:]}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        log = open(self.log_path, "wb")
        extra = ["--extra-config", str(self._write_sasl_ssl_config())] if self.tls_pem else []
        self.proc = subprocess.Popen(
            ["bash", str(KAFKA_SH), "run", "--port", str(self.port), "--controller-port", str(self.controller_port),
             "--dir", str(self.workdir), "--partitions", str(self.partitions), *extra],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        try:
            wait_until(lambda: port_open("127.0.0.1", self.port), self.start_timeout, "kafka broker",
                       alive=lambda: self.proc.poll() is None, log_tail=lambda: tail(str(self.log_path)))
            wait_until(self._metadata_ok, 30, "kafka metadata", alive=lambda: self.proc.poll() is None,
                       log_tail=lambda: tail(str(self.log_path)), interval=0.2)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _write_sasl_ssl_config(self) -> Path:
        p, c, s = self.port, self.controller_port, self.secure_port
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        path = self.workdir / "sasl_ssl.properties"
        path.write_text("\n".join([
            f"listeners=PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c},SASL_SSL://127.0.0.1:{s}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{p},SASL_SSL://127.0.0.1:{s}",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512",
            f"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram}",
            f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram}",
            "listener.name.sasl_ssl.ssl.keystore.type=PEM",
            f"listener.name.sasl_ssl.ssl.keystore.location={self.tls_pem}",
            "",
        ]))
        return path

    def add_scram_user(self, user: str, password: str, mechanism: str = "SCRAM-SHA-512") -> None:
        """Create or update a SCRAM user (stored by the KRaft controller; effective within a second)."""
        from kafka.admin import ScramMechanism, UserScramCredentialUpsertion
        mech = ScramMechanism[mechanism.replace("-", "_")]
        admin = self.admin()
        try:
            admin.alter_user_scram_credentials([UserScramCredentialUpsertion(user, mech, password)])
        finally:
            admin.close()

    def _metadata_ok(self) -> bool:
        from kafka.admin import KafkaAdminClient
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, bootstrap_timeout_ms=2000,
                                 request_timeout_ms=3000)
        try:
            admin.list_topics()
            return True
        finally:
            admin.close()

    def admin(self):
        from kafka.admin import KafkaAdminClient
        return KafkaAdminClient(bootstrap_servers=self.bootstrap, bootstrap_timeout_ms=5000)

    def create_topic(self, name: str, partitions: int | None = None) -> str:
        admin = self.admin()
        try:
            admin.create_topics({name: {"num_partitions": partitions or self.partitions, "replication_factor": 1}},
                                wait_for_metadata=True)
        finally:
            admin.close()
        return name

    def end_offsets(self, topic: str) -> dict[int, int]:
        from kafka import KafkaConsumer, TopicPartition
        c = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            parts = [TopicPartition(topic, p) for p in (c.partitions_for_topic(topic) or [])]
            return {tp.partition: off for tp, off in c.end_offsets(parts).items()}
        finally:
            c.close()

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """Committed offsets of a consumer group ({} while the group or the offsets topic does not exist yet)."""
        from kafka.errors import CoordinatorNotAvailableError, GroupIdNotFoundError, NotCoordinatorError
        admin = self.admin()
        try:
            offs = admin.list_group_offsets({group: None}).get(group, {})  # kafka-python 3.x name
        except (CoordinatorNotAvailableError, NotCoordinatorError, GroupIdNotFoundError):
            return {}
        finally:
            admin.close()
        return {tp.partition: om.offset for tp, om in offs.items() if tp.topic == topic and om.offset >= 0}

    def stop(self) -> None:
        stop_process(self.proc, timeout=15)
        self.proc = None
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "KafkaBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
