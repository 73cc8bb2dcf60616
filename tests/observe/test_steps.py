"""The step runners: ``drive`` on the event loop, with its slices on a quiet and on a
busy loop, and ``release``."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator

from lvsd.observe.steps import drive, release


async def _drive_order(step_s: float, slice_s: float) -> list[str]:
    """The order of three steps (each ``step_s`` long), their end and a task woken
    before them, under ``drive(..., slice_s)``."""
    order: list[str] = []

    def steps() -> Generator[None, None, str]:
        for i in range(3):
            time.sleep(step_s)
            order.append(f"step {i}")
            yield
        order.append("done")
        return "value"

    async def other() -> None:
        order.append("other")

    task = asyncio.get_running_loop().create_task(other())
    assert "value" == await drive(steps(), slice_s)
    await task
    return order


async def test_drive_lets_other_tasks_run_once_a_slice_has_passed() -> None:
    """drive() returns the generator's value and runs the loop once a slice has
    passed: steps longer than the slice let a task woken meanwhile run after the
    first; quick steps run together, the task after them."""
    assert ["step 0", "other", "step 1", "step 2", "done"] == await _drive_order(0.003, 0.002)
    assert ["step 0", "step 1", "step 2", "done", "other"] == await _drive_order(0.0, 1.0)


async def _rounds_of_others(slice_max: float) -> int:
    """How many rounds a busy loop (another callback taking 10 ms of a fake clock at
    each round) runs while drive() takes 40 steps of 0.5 ms (1 ms slices)."""
    now = [0.0]
    rounds = [0]

    def busy() -> None:
        rounds[0] += 1
        now[0] += 0.010
        loop.call_soon(busy)

    def steps() -> Generator[None, None, None]:
        for _ in range(40):
            now[0] += 0.0005
            yield

    loop = asyncio.get_running_loop()
    handle = loop.call_soon(busy)
    await drive(steps(), 0.001, slice_max, clock=lambda: now[0])
    handle.cancel()
    return rounds[0]


async def test_drive_on_a_busy_loop_runs_as_long_as_the_others_did() -> None:
    """On a loop whose other work takes 10 ms a round, drive() runs 10 ms slices
    after its first 1 ms one: 20 ms of steps take 2 rounds, not one per 1 ms slice
    (20) as when slice_max keeps the slice at 1 ms."""
    assert 2 == await _rounds_of_others(0.05)
    assert 20 == await _rounds_of_others(0.001)


def test_release_empties_each_list_a_chunk_a_step() -> None:
    """release() empties every list it holds, ``chunk`` items a step, the lists in
    order."""
    held: list[list[object]] = [list(range(5)), [], list(range(2))]
    steps = release(held, chunk=2)
    sizes = []
    for _ in steps:
        sizes.append([len(items) for items in held])
    assert [[3, 0, 2], [1, 0, 2], [0, 0, 2], [0, 0, 0]] == sizes
