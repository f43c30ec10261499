"""What one single-event publish costs ingest's process, without HTTP: `KafkaBus.publish` against `send()`.

    .venv/bin/python bench/ingest_publish.py --bootstrap 127.0.0.1:39092

Needs a running broker (deploy/kafka/kafka.sh start DIR PORT). On uvloop, as the CLI runs, 16 tasks
publish one message at a time, as 16 concurrent batch-1 deliveries do. Alternating, `--rounds` times:
- bus: `KafkaBus.publish([message])`, ingest's own call (shared/bus/kafka.py, the batch publisher);
- send: aiokafka's `send()` of the same message to the same partition, then its acknowledgement.
Prints messages/s and the process's CPU per publish. Each round publishes to a topic of its own.
`--work-us 450` holds the loop that long before each publish, as handling a request does, so that publishes
arrive at ingest's own batch-1 rate; the CPU per publish leaves that work out.
"""

import argparse
import asyncio
import logging
import time

import uvloop
from ingest_producer import ingest_messages

from onefunnel.shared.bus import OutgoingMessage
from onefunnel.shared.bus.kafka import KafkaBus
from onefunnel.shared.bus.kafka_partitioner import partition_for

TASKS = 16


def busy(seconds: float) -> None:
    """Hold the event loop as handling a request does, for `seconds` of the process's CPU."""
    until = time.process_time() + seconds
    while time.process_time() < until:
        pass


async def measure(
    mode: str, *, bootstrap: str, messages: list[OutgoingMessage], work: float
) -> tuple[float, float]:
    """(messages/s, µs of CPU per publish, the simulated work not counted) for one round of `mode`."""
    topic = f"bench.publish.{mode}.{time.time_ns()}"
    bus = KafkaBus(
        bootstrap_servers=bootstrap,
        client_id="onefunnel-bench",
        partitions=6,
        replication_factor=1,
        publish_timeout=5.0,
        max_message_bytes=1 << 20,
        topics=[topic],
    )
    try:
        await bus.publish(topic, messages[:1])  # starts the producer and creates the topic
        producer = await bus._started_producer()
        partitions = sorted(await producer.partitions_for(topic))
        pending = iter(messages)

        async def publisher() -> None:
            for m in pending:
                if work:
                    busy(work)
                if mode == "bus":
                    await bus.publish(topic, [m])
                else:
                    partition = partition_for(m.key, partitions)
                    sent = await producer.send(
                        topic, key=m.key, value=m.value, headers=list(m.headers), partition=partition
                    )
                    await sent

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(publisher() for _ in range(TASKS)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await bus.close()
    return len(messages) / wall, (cpu / len(messages) - work) * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--bootstrap", required=True, help="a running broker, e.g. 127.0.0.1:39092")
    parser.add_argument("--messages", type=int, default=8000, help="publishes per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--work-us",
        type=float,
        default=0.0,
        help="CPU each task spends before each publish, as handling a request does (not counted)",
    )
    args = parser.parse_args()
    # A new topic's first produce requests may meet a leader not yet elected: aiokafka retries, and warns.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    messages = ingest_messages(args.messages, first_event_id=1)
    print(f"{args.messages} single-message publishes per round, {TASKS} tasks, uvloop:")
    for round_ in range(1, args.rounds + 1):
        for mode in ("bus", "send"):
            rate, cpu = await measure(
                mode, bootstrap=args.bootstrap, messages=messages, work=args.work_us / 1e6
            )
            print(f"  round {round_}  {mode:4}  {rate:7,.0f} messages/s  {cpu:5.0f} µs CPU per publish")


if __name__ == "__main__":
    uvloop.run(main())
