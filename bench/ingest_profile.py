"""Where ingest's CPU goes: `ingest.py --profile` samples the server with pyinstrument under load.

Profiling slows the server down, so these runs are separate from the measured ones. Each sample's
time is charged to the first step of STEPS found on its stack (a step of the webhook route before
the framework around it), which sums to the busy time of the process.
"""

import sys
from collections import defaultdict
from pathlib import Path

from ingest_servers import serve_ingest

# (where, step): `where` is matched against "file:function" of every frame on a sample's stack.
STEPS = (
    ("limits.py:read_body", "read the body"),
    ("hubspot.py:verify", "verify the signature"),
    ("limits.py:check_json_depth", "JSON depth check"),
    ("hubspot.py:normalize", "normalize: parse, SourceEvent models, uuid5"),
    ("envelope.py:encode", "envelope.encode: JSON, headers"),
    ("producer.py:send", "aiokafka send(), per message: partitioner, accumulator"),
    ("kafka.py:publish", "KafkaBus.publish: timeout, gather"),
    ("webhooks.py:_finish", "count and log the outcome"),
    ("webhooks.py:receive", "the route's own code: headers, Delivery, metrics, response"),
    ("aiokafka/", "aiokafka in the background: produce requests, acks, socket"),
    # The app sends its answer through uvicorn's send(), under the framework's frames.
    ("h11_impl.py:send", "uvicorn HTTP/1.1 (h11)"),
    ("httptools_impl.py:send", "uvicorn HTTP/1.1 (httptools)"),
    ("applications.py", "FastAPI/Starlette: middleware, routing, request, response"),
    ("h11_impl.py", "uvicorn HTTP/1.1 (h11)"),
    ("httptools_impl.py", "uvicorn HTTP/1.1 (httptools)"),
)
_IDLE = (".poll", ".select", "run_until_complete", "run_forever", "runners.py:run")


def serve_profiled(*, stack: str, out: Path) -> None:
    """`onefunnel ingest` under pyinstrument; the session is saved to `out` when it stops."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        serve_ingest(stack=stack)
    finally:
        profiler.stop().save(str(out))


def breakdown(session_file: Path, *, requests: int, events: int, cpu_us: float) -> list[str]:
    """Lines of the profile's busy time by step: its share, and that share of the CPU the process
    used per request (`cpu_us`) and per event. pyinstrument samples wall time, so the shares hold
    even when the process waited for a core."""
    from pyinstrument.frame import Frame
    from pyinstrument.session import Session

    root = Session.load(str(session_file)).root_frame()
    assert root is not None
    spent: defaultdict[str, float] = defaultdict(float)
    pending: list[tuple[Frame, tuple[str, ...]]] = [(root, ())]
    while pending:
        frame, stack = pending.pop()
        here = (*stack, f"{frame.file_path_short}:{frame.function}")
        pending.extend((child, here) for child in frame.children)
        spent[_step(here)] += frame.time - sum(child.time for child in frame.children)
    busy = sum(spent.values()) - spent["idle"] - spent["start-up and other"]
    lines = [f"{requests:,} requests, {events:,} events, {cpu_us:,.0f} µs CPU per request profiled"]
    for step, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        share = seconds / busy
        if step not in ("idle", "start-up and other") and share > 0.005:
            per_request = share * cpu_us
            lines.append(
                f"  {share:6.1%}  {per_request:7.1f} µs/request"
                f"  {per_request * requests / events:6.1f} µs/event  {step}"
            )
    return lines


def _step(stack: tuple[str, ...]) -> str:
    if not any("asyncio/runners.py" in frame for frame in stack):
        return "start-up and other"  # imports, before the CLI starts its event loop
    # Waiting for I/O: in the selector (asyncio), or inside uvloop's C loop, which no frame shows.
    frames = stack[:-1] if stack[-1].endswith(":[self]") else stack
    if any(word in frames[-1] for word in _IDLE):
        return "idle"
    for where, step in STEPS:
        if any(where in frame for frame in stack):
            return step
    return "event loop and the rest"


if __name__ == "__main__":
    requests, events, cpu_us = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    print("\n".join(breakdown(Path(sys.argv[1]), requests=requests, events=events, cpu_us=cpu_us)))
