#!/usr/bin/env bash
# Run a real single-node Apache Kafka broker (KRaft, combined broker+controller) on 127.0.0.1
# from the official Maven Central artifacts, with `java -cp` and the main classes the official
# distribution's bin/ scripts use (kafka.tools.StorageTool, kafka.Kafka).
#
#   kafka.sh resolve            download the jars (once)
#   kafka.sh start DIR [PORT]   resolve jars, format DIR, start the broker, wait until it answers
#   kafka.sh stop DIR           stop the broker started in DIR
#
# Jars are resolved once into $ONEFUNNEL_KAFKA_LIBS (default ~/.cache/onefunnel/kafka-libs).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
libs=${ONEFUNNEL_KAFKA_LIBS:-$HOME/.cache/onefunnel/kafka-libs}

resolve_jars() {
  # The cache is keyed by the pom's content, so a fresh clone reuses it and a version bump refreshes it.
  local want; want=$(sha256sum "$here/pom.xml" | cut -d' ' -f1)
  if [ "$(cat "$libs/.complete" 2>/dev/null)" = "$want" ]; then return; fi
  echo "kafka.sh: resolving Apache Kafka jars from Maven Central into $libs" >&2
  rm -rf "$libs"
  mvn -B -ntp -f "$here/pom.xml" dependency:copy-dependencies -DoutputDirectory="$libs" \
    | grep -E "Copying|BUILD|ERROR" >&2
  echo "$want" >"$libs/.complete"
}

wait_for_port() {  # $1 port, $2 pid, $3 log
  for _ in $(seq 1 120); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then
      echo "kafka.sh: broker exited during start-up; last log lines:" >&2; tail -n 30 "$3" >&2; return 1
    fi
    sleep 0.5
  done
  echo "kafka.sh: broker did not answer on 127.0.0.1:$1 within 60 s" >&2; tail -n 30 "$3" >&2; return 1
}

start() {
  local dir=$1 port=${2:-9092}
  local controller_port=$((port + 1))
  resolve_jars
  mkdir -p "$dir/data"
  local cp="$libs/*"
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
PROPS
  cat >"$dir/log4j2.yaml" <<'LOG'
Configuration:
  Appenders:
    Console: {name: STDOUT, PatternLayout: {pattern: "[%d] %p %m (%c)%n"}}
  Loggers:
    Root: {level: WARN, AppenderRef: [{ref: STDOUT}]}
    Logger: [{name: kafka.server.KafkaRaftServer, level: INFO}, {name: kafka.server.BrokerServer, level: INFO}]
LOG
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cluster_id
    cluster_id=$(java -cp "$cp" kafka.tools.StorageTool random-uuid)
    java -Dlog4j2.configurationFile="$dir/log4j2.yaml" -cp "$cp" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$dir/server.properties" >"$dir/format.log" 2>&1
  fi
  nohup java -Xms256m -Xmx512m -Dlog4j2.configurationFile="$dir/log4j2.yaml" -cp "$cp" \
    kafka.Kafka "$dir/server.properties" >"$dir/broker.log" 2>&1 &
  echo $! >"$dir/broker.pid"
  wait_for_port "$port" "$(cat "$dir/broker.pid")" "$dir/broker.log"
  echo "kafka.sh: broker up on 127.0.0.1:$port (pid $(cat "$dir/broker.pid"), data in $dir)" >&2
}

stop() {
  local dir=$1
  [ -f "$dir/broker.pid" ] || return 0
  local pid; pid=$(cat "$dir/broker.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/broker.pid"
}

case "${1:-}" in
  resolve) resolve_jars ;;
  start) start "${2:?data directory}" "${3:-9092}" ;;
  stop) stop "${2:?data directory}" ;;
  *) echo "usage: kafka.sh resolve | start DIR [PORT] | stop DIR" >&2; exit 2 ;;
esac
