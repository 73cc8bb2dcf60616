"""What a health report turns into: quorum commands, panic logged at error level."""

from __future__ import annotations

from pathlib import Path

from tests.engine.helpers import cid, config_text, fail, ok, started


async def test_quorum_loss_runs_the_down_command(tmp_path: Path) -> None:
    """Losing the quorum runs down_command once; regaining it runs up_command."""
    extra = """
[services.web.quorum]
minimum = 2
down_command = ["/bin/echo", "down"]
up_command = ["/bin/echo", "up"]
"""
    ran: list[tuple[str, ...]] = []
    engine, _, _ = await started(
        tmp_path, config_text(service_extra=extra), run_command=lambda argv: ran.append(tuple(argv))
    )
    await engine.results([(cid(engine.config, "10.0.0.2"), fail())])
    await engine.results([(cid(engine.config, "10.0.0.2"), ok())])
    assert [("/bin/echo", "down"), ("/bin/echo", "up")] == ran


async def test_panic_holds_a_round_of_failures_and_logs_at_error(tmp_path: Path) -> None:
    """Most of the pool failing in one round trips the panic guard: weights are kept
    (no op) and ``service.panic`` is logged at error level."""
    from structlog.testing import capture_logs

    extra = "\n[services.web.panic]\nthreshold = 0.5\nmin_servers = 3\n"
    servers = (("10.0.0.2", 1), ("10.0.0.3", 1), ("10.0.0.4", 1))
    engine, backend, _ = await started(tmp_path, config_text(servers, service_extra=extra))
    received = len(backend.received)
    batch = [(cid(engine.config, a), fail()) for a, _ in servers]
    with capture_logs() as logs:
        await engine.results(batch)
    assert received == len(backend.received)
    panics = [e for e in logs if e["event"] == "service.panic"]
    assert [("error", "web", 3, 3)] == [
        (e["log_level"], e["service"], e["failing"], e["total"]) for e in panics
    ]
