"""Keep a service's background loops running: restart one that failed, after a growing pause."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

MAX_PAUSE_SECONDS = 30.0


async def keep_running(name: str, loop: Callable[[], Awaitable[None]]) -> None:
    """Run `loop` until cancelled, restarting it when it raises (the bus or database went away)."""
    pause = 0.5
    while True:
        try:
            await loop()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s stopped; restarting in %.1f s", name, pause, extra={"loop": name})
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE_SECONDS)
