"""Publish with one record batch per partition for all the publishes in flight, one future per publish.

aiokafka's `send()` costs a coroutine, a partitioner call and a future per message, and the caller
a `gather` over them: at 50 events a delivery that is most of the bus's CPU. Its batch API has none
of that, but `send_batch` waits until the partition's previous batch has left, so a batch per
publish would put one delivery per round trip on a partition. Here each partition has a queue: a
publish appends its messages and waits for one future; the partition's flusher, while the previous
batch is on its way, lets the queue fill with every concurrent publish's messages and sends them as
one batch. Order per partition is the order of the publishes, as with `send()`.

Every publish has a deadline, enforced by one timer for all of them: a timer per publish (what
`asyncio.timeout` sets) cost a batch-1 delivery of ingest tens of microseconds (docs/benchmarks.md).
"""

import asyncio
import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from onefunnel.shared.bus.base import OutgoingMessage


@dataclass(eq=False)
class _Publish:
    """One caller's messages: done when the broker acknowledged the last of them."""

    remaining: int
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def acknowledged(self, count: int) -> None:
        self.remaining -= count
        if self.remaining == 0 and not self.done.done():
            self.done.set_result(None)

    def failed(self, error: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(error)


@dataclass
class _Partition:
    queue: list[tuple[_Publish, OutgoingMessage]] = field(default_factory=list)
    flusher: asyncio.Task[None] | None = None


class BatchPublisher:
    """Coalesces concurrent publishes into record batches; the producer it is given stays the caller's."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._partitions: dict[tuple[str, int], _Partition] = {}
        # (deadline, tie-breaker, publish), the earliest first; done publishes leave when they reach the top.
        self._deadlines: list[tuple[float, int, _Publish]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    def publish(
        self, topic: str, placed: Sequence[tuple[int, OutgoingMessage]], *, deadline: float
    ) -> asyncio.Future[None]:
        """Queue each (partition, message); the future is done when every one is acknowledged.

        It fails with TimeoutError once the loop's clock passes `deadline` first. A caller that stops
        waiting leaves its future to fail or succeed unobserved. Either way its messages not yet in a
        batch are dropped; those already sent may still land.
        """
        publish = _Publish(remaining=len(placed))
        if not placed:
            publish.done.set_result(None)
            return publish.done
        heapq.heappush(self._deadlines, (deadline, next(self._order), publish))
        if self._timer is None or deadline < self._timer.when():
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(deadline, self._expire)
        for partition, message in placed:
            queue = self._partitions.get((topic, partition))
            if queue is None:  # not setdefault: that would build a _Partition for every message
                queue = self._partitions[topic, partition] = _Partition()
            queue.queue.append((publish, message))
            if queue.flusher is None:
                queue.flusher = asyncio.create_task(self._flush(topic, partition, queue))
        return publish.done

    async def close(self) -> None:
        """Wait for the flushers to hand their queues to the producer (whose `stop()` then flushes)."""
        flushers = [q.flusher for q in self._partitions.values() if q.flusher is not None]
        await asyncio.gather(*flushers, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        """Fail the publishes past their deadline; wait for the next one still pending."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._deadlines:
            deadline, _, publish = self._deadlines[0]
            if not publish.done.done() and deadline > now:
                self._timer = loop.call_at(deadline, self._expire)
                return
            heapq.heappop(self._deadlines)
            publish.failed(TimeoutError("not acknowledged by the deadline"))
        self._timer = None

    async def _flush(self, topic: str, partition: int, queue: _Partition) -> None:
        try:
            while queue.queue:
                builder = self._producer.create_batch()
                counts: dict[_Publish, int] = {}
                taken = 0
                for publish, message in queue.queue:
                    if publish.done.done():  # its caller gave up (or another batch of it failed)
                        taken += 1
                        continue
                    appended = builder.append(
                        timestamp=None, key=message.key, value=message.value, headers=list(message.headers)
                    )
                    if appended is None:  # full: the rest goes in the next batch
                        break
                    counts[publish] = counts.get(publish, 0) + 1
                    taken += 1
                del queue.queue[:taken]
                if not counts:
                    continue
                builder.close()  # nothing more goes in: the sender need not linger for it
                try:
                    # Waits until the partition's previous batch has left; the queue fills meanwhile.
                    sent = await self._producer.send_batch(builder, topic, partition=partition)
                except Exception as error:  # reported to each publish it concerns
                    for publish in counts:
                        publish.failed(error)
                    continue
                sent.add_done_callback(lambda future, counts=counts: _settle(future, counts))
        finally:
            queue.flusher = None


def _settle(sent: "asyncio.Future[object]", counts: dict[_Publish, int]) -> None:
    error = None if sent.cancelled() else sent.exception()
    for publish, count in counts.items():
        if sent.cancelled():
            publish.failed(asyncio.CancelledError())
        elif error is not None:
            publish.failed(error)
        else:
            publish.acknowledged(count)
