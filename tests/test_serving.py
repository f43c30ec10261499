"""Commands run on uvloop; serving tunes the garbage collector once start-up is done (services/serving.py)."""

import asyncio
import gc
from collections.abc import Iterator

import httpx
import pytest
import uvloop
from fastapi import FastAPI

from onefunnel import serving
from tests.conftest import free_port


class BuiltAtStartUp:
    """An instance of a class: a container the collector tracks."""


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    serving.settle_garbage_collector.cache_clear()  # as in a process that has not served yet
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
async def test_a_served_process_collects_less_often_and_skips_what_start_up_built() -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    app = FastAPI()
    built_at_start_up = BuiltAtStartUp()
    stop, port = asyncio.Event(), free_port()
    server = asyncio.create_task(serving.serve([serving.Endpoint("t", app, "127.0.0.1", port)], stop=stop))
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(100):
                try:
                    answered = (await client.get(f"http://127.0.0.1:{port}/docs")).status_code
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("the served app never answered")
        assert answered == 200
        assert gc.get_threshold() == (serving.YOUNG_COLLECTION_THRESHOLD, 10, 10)
        assert gc.get_freeze_count() > 0
        assert not any(o is built_at_start_up for o in gc.get_objects())  # frozen: never walked again
    finally:
        stop.set()
        await server


def test_commands_run_on_uvloop_which_the_package_depends_on() -> None:
    async def loop_type() -> type[asyncio.AbstractEventLoop]:
        return type(asyncio.get_running_loop())

    assert serving.run(loop_type()) is uvloop.Loop
