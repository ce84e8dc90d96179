#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, broker+controller in one JVM) for development, the demo and the tests.
# The broker's jars come from Maven Central through tools/kafka/pom.xml into tools/kafka/target/lib (git-ignored).
#
#   tools/kafka/kafka.sh jars                         resolve the jars if missing (mvn dependency:copy-dependencies)
#   tools/kafka/kafka.sh start [--port P] [--dir D]   format storage, start in the background, wait until ready,
#                                                     print the bootstrap address (127.0.0.1:P)
#   tools/kafka/kafka.sh stop  [--dir D]              stop the broker started with that dir (SIGTERM, then SIGKILL)
#   tools/kafka/kafka.sh status [--dir D]             running or not
#   tools/kafka/kafka.sh run   [--port P] [--controller-port C] [--dir D] [--extra-config F]
#                                                     format and exec the broker in the foreground (used by the
#                                                     pytest fixture, which owns the process); F's properties are
#                                                     appended (a later key wins: e.g. a SASL_SSL listener)
# Defaults: --port 19092, --controller-port port+1, --dir <repo>/.cache/kafka. Loopback only, no auth.
# No topic auto-creation (create them with `hymirec stream create-topics`). Tuned for a small machine:
# 4 partitions per topic, group.initial.rebalance.delay.ms=0, replication 1, -Xmx512m.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
LIB="$HERE/target/lib"
CMD="${1:-}"; shift || true
PORT=19092; CPORT=""; DIR="$ROOT/.cache/kafka"; PARTITIONS=4; EXTRA=""
while [ $# -gt 0 ]; do
    case "$1" in
        --port) PORT="$2"; shift 2 ;;
        --controller-port) CPORT="$2"; shift 2 ;;
        --dir) DIR="$2"; shift 2 ;;
        --partitions) PARTITIONS="$2"; shift 2 ;;
        --extra-config) EXTRA="$2"; shift 2 ;;
        *) echo "kafka.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
CPORT="${CPORT:-$((PORT + 1))}"
JAVA="${JAVA:-java}"
HEAP="${KAFKA_HEAP_OPTS:--Xmx512m -Xms128m}"
JVM_OPTS=(-server $HEAP -XX:+UseSerialGC -Djava.awt.headless=true
          -Dlog4j2.configurationFile="$HERE/log4j2.properties" -Dlog4j2.formatMsgNoLookups=true)

jars() {
    if ! ls "$LIB"/kafka_2.13-*.jar >/dev/null 2>&1; then
        command -v mvn >/dev/null || { echo "kafka.sh: mvn not found (apt-get install maven)" >&2; exit 1; }
        echo "[kafka] resolving broker jars from Maven Central into $LIB" >&2
        mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies >&2
    fi
}

write_config() {
    mkdir -p "$DIR/data"
    cat > "$DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DIR/data
num.partitions=$PARTITIONS
default.replication.factor=1
# Topics are created explicitly (hymirec stream create-topics, with partitions and replication): a typo in a
# topic name must fail, not create an empty topic that nothing reads.
auto.create.topics.enable=false
# The multi-consumer test kills members and expects their partitions moved within seconds (broker default 6 s).
group.min.session.timeout.ms=1000
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
log.retention.hours=24
log.segment.bytes=67108864
PROPS
    if [ -n "$EXTRA" ]; then cat "$EXTRA" >> "$DIR/server.properties"; fi
}

format_storage() {
    if [ ! -f "$DIR/data/meta.properties" ]; then
        local cid
        # An id starting with "-" would be read as an option by the storage tool (Kafka's own Uuid.randomUuid
        # redraws those too).
        cid="$(python3 -c 'import base64,uuid
while (c := base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()).startswith("-"): pass
print(c)')"
        "$JAVA" "${JVM_OPTS[@]}" -cp "$LIB/*" kafka.tools.StorageTool format -t "$cid" \
            -c "$DIR/server.properties" --ignore-formatted >"$DIR/format.log" 2>&1 \
            || { cat "$DIR/format.log" >&2; exit 1; }
    fi
}

wait_ready() {  # the broker answers on its port and lists its metadata
    local deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-60}))
    while [ $SECONDS -lt $deadline ]; do
        if ! kill -0 "$(cat "$DIR/kafka.pid")" 2>/dev/null; then
            echo "kafka.sh: broker exited during start-up; log: $DIR/server.log" >&2; tail -20 "$DIR/server.log" >&2; exit 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            sleep 0.5; return 0
        fi
        sleep 0.2
    done
    echo "kafka.sh: broker not ready after ${KAFKA_START_TIMEOUT:-60}s; log: $DIR/server.log" >&2; exit 1
}

case "$CMD" in
    jars) jars ;;
    run)
        jars; write_config; format_storage
        exec "$JAVA" "${JVM_OPTS[@]}" -cp "$LIB/*" kafka.Kafka "$DIR/server.properties" ;;
    start)
        jars
        if [ -f "$DIR/kafka.pid" ] && kill -0 "$(cat "$DIR/kafka.pid")" 2>/dev/null; then
            echo "127.0.0.1:$(cat "$DIR/port")"; exit 0
        fi
        write_config; format_storage
        echo "$PORT" > "$DIR/port"
        nohup "$JAVA" "${JVM_OPTS[@]}" -cp "$LIB/*" kafka.Kafka "$DIR/server.properties" >"$DIR/server.log" 2>&1 &
        echo $! > "$DIR/kafka.pid"
        wait_ready
        echo "127.0.0.1:$PORT" ;;
    stop)
        if [ -f "$DIR/kafka.pid" ]; then
            pid="$(cat "$DIR/kafka.pid")"
            if kill -0 "$pid" 2>/dev/null; then
                kill -TERM "$pid"
                for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
                kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
            fi
            rm -f "$DIR/kafka.pid"
        fi ;;
    status)
        if [ -f "$DIR/kafka.pid" ] && kill -0 "$(cat "$DIR/kafka.pid")" 2>/dev/null; then
            echo "running (pid $(cat "$DIR/kafka.pid"), 127.0.0.1:$(cat "$DIR/port"))"
        else echo "stopped"; exit 3; fi ;;
    *) sed -n '2,16p' "$0"; exit 2 ;;
esac
