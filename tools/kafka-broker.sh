#!/usr/bin/env bash
# A throwaway single-node Apache Kafka broker (KRaft) for tests, built from the
# org.apache.kafka artifacts on Maven Central. Needs Java 17+ and Maven.
#
#   tools/kafka-broker.sh start RUN_DIR   -> prints the bootstrap address (127.0.0.1:PORT)
#   tools/kafka-broker.sh stop RUN_DIR
#   tools/kafka-broker.sh restart RUN_DIR -> stops and starts the broker of RUN_DIR again on the
#                                            same port and data dir (for broker-restart tests)
#
# The jars are resolved once into ${EXSF_CACHE_DIR:-~/.cache/exsf}/kafka-<version>/libs
# and reused. Broker data and logs live in RUN_DIR (logs: RUN_DIR/logs/server.log).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")"
cache="${EXSF_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/exsf}/kafka-$version"

die() { echo "kafka-broker: $*" >&2; exit 1; }

resolve() {
  if [ -f "$cache/.complete" ]; then return; fi
  command -v java >/dev/null || die "java not found: install a JDK 17+ (or set KAFKA_BOOTSTRAP_SERVERS to an existing cluster)"
  command -v mvn >/dev/null || die "mvn not found: install Maven (or set KAFKA_BOOTSTRAP_SERVERS to an existing cluster)"
  echo "kafka-broker: resolving Apache Kafka $version from Maven Central into $cache (once)" >&2
  mkdir -p "$cache"
  rm -rf "$cache/libs"
  mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$cache/libs" -DincludeScope=runtime >&2 \
    || die "Maven could not resolve org.apache.kafka:kafka_2.13:$version (is Maven Central reachable?)"
  touch "$cache/.complete"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
  local run="$1"
  resolve
  mkdir -p "$run/data" "$run/logs"
  local port ctl
  port="$(free_port)"; ctl="$(free_port)"
  cat > "$run/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$ctl
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctl
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$run/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.cleaner.enable=true
EOF
  local cp="$cache/libs/*"
  local jopts=(-Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true
               "-Dlog4j2.configurationFile=$here/kafka/log4j2.properties" "-Dkafka.logs.dir=$run/logs")
  java "${jopts[@]}" -cp "$cp" kafka.tools.StorageTool format --ignore-formatted \
      -t "$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null)" \
      -c "$run/server.properties" > "$run/logs/format.log" 2>&1 || { cat "$run/logs/format.log" >&2; die "storage format failed"; }
  launch "$run" "$port"
}

# Launch the broker of an already formatted RUN_DIR and wait until it has started.
launch() {
  local run="$1" port="$2"
  local cp="$cache/libs/*"
  local jopts=(-Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true
               "-Dlog4j2.configurationFile=$here/kafka/log4j2.properties" "-Dkafka.logs.dir=$run/logs")
  # A restart finds the previous run's "started" lines in server.log: wait for a new one.
  local before=0
  if [ -f "$run/logs/server.log" ]; then before="$(grep -c "Kafka Server started" "$run/logs/server.log" || true)"; fi
  nohup java "${jopts[@]}" -cp "$cp" kafka.Kafka "$run/server.properties" >> "$run/logs/stdout.log" 2>&1 &
  echo $! > "$run/broker.pid"
  # Ready when the broker answers a metadata request (not merely when the port is open).
  for _ in $(seq 1 240); do
    if ! kill -0 "$(cat "$run/broker.pid")" 2>/dev/null; then
      tail -n 40 "$run/logs/stdout.log" "$run/logs/server.log" >&2 2>/dev/null || true
      die "broker process exited during start-up (logs above, full logs in $run/logs)"
    fi
    if [ "$(grep -c "Kafka Server started" "$run/logs/server.log" 2>/dev/null || true)" -gt "$before" ]; then
      echo "127.0.0.1:$port"
      return 0
    fi
    sleep 0.5
  done
  tail -n 40 "$run/logs/server.log" >&2 2>/dev/null || true
  stop "$run"
  die "broker did not start within 120 s (logs in $run/logs)"
}

stop() {
  local run="$1" pid
  [ -f "$run/broker.pid" ] || return 0
  pid="$(cat "$run/broker.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$run/broker.pid"
}

restart() {
  local run="$1" port
  [ -f "$run/server.properties" ] || die "no broker in $run (start it first)"
  port="$(sed -n 's/^listeners=PLAINTEXT:\/\/127.0.0.1:\([0-9]*\),.*/\1/p' "$run/server.properties")"
  stop "$run"
  resolve
  launch "$run" "$port"
}

case "${1:-}" in
  start) [ -n "${2:-}" ] || die "usage: $0 start RUN_DIR"; start "$2" ;;
  stop) [ -n "${2:-}" ] || die "usage: $0 stop RUN_DIR"; stop "$2" ;;
  restart) [ -n "${2:-}" ] || die "usage: $0 restart RUN_DIR"; restart "$2" ;;
  resolve) resolve ;;
  *) die "usage: $0 start|stop|restart RUN_DIR | resolve" ;;
esac
