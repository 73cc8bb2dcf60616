"""Notify commands: real commands run on a real server's change, writing to a tmp file."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from lvsd.config import load
from lvsd.engine.notify import Job, Notifier, run_job
from lvsd.errors import ConfigError
from tests.engine.helpers import RS1, RS2, cid, config_text, fail, ok, started, write

#: Appends its arguments and the change's environment as one line to the file $1.
RECORD = (
    '["/bin/sh", "-c", '
    '"echo \\"$0 $LVSD_SERVICE $LVSD_REALSERVER $LVSD_STATE $LVSD_REASON $LVSD_VIP\\" >> $1", '
    '"{state}:{rip}:{rport}:{vport}", "OUT"]'
)


def notify_table(out: Path, extra: str = "") -> str:
    command = RECORD.replace("OUT", str(out))
    return f"notify = {{ up = {command}, down = {command}{extra} }}"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_a_change_runs_the_command_with_its_arguments_and_environment(
    tmp_path: Path,
) -> None:
    """A real server going down then up runs down then up, with the placeholders in its
    arguments and the change in its environment."""
    out = tmp_path / "out"
    engine, _, _ = await started(tmp_path, config_text(service_extra=notify_table(out)))
    await engine.results([(cid(engine.config, "10.0.0.2"), fail())])
    await engine.notifier.drain()
    await engine.results([(cid(engine.config, "10.0.0.2"), ok())])
    await engine.notifier.drain()
    assert [
        "down:10.0.0.2:80:80 web 10.0.0.2:80 down refused 192.168.3.108",
        "up:10.0.0.2:80:80 web 10.0.0.2:80 up ok 192.168.3.108",
    ] == lines(out)
    await engine.close()


async def test_stop_runs_the_down_commands_of_the_servers_up_with_on_stop(tmp_path: Path) -> None:
    """With ``on_stop``, closing the engine runs the down command (reason ``stop``) for
    each real server still up, and only for those."""
    out = tmp_path / "out"
    text = config_text(service_extra=notify_table(out, ", on_stop = true"))
    engine, _, _ = await started(tmp_path, text)
    await engine.results([(cid(engine.config, "10.0.0.2"), fail())])
    await engine.notifier.drain()
    out.unlink()
    await engine.close()
    assert ["down:10.0.0.3:80:80 web 10.0.0.3:80 down stop 192.168.3.108"] == lines(out)


async def test_without_on_stop_stopping_runs_nothing(tmp_path: Path) -> None:
    """By default a stop runs no notify command."""
    out = tmp_path / "out"
    engine, _, _ = await started(tmp_path, config_text(service_extra=notify_table(out)))
    await engine.close()
    assert [] == lines(out)


async def test_a_real_servers_notify_replaces_its_services(tmp_path: Path) -> None:
    """A real server's own notify table wins over the service's."""
    own, shared = tmp_path / "own", tmp_path / "shared"
    text = config_text(service_extra=notify_table(shared)).replace(
        'address = "10.0.0.2"\nport = 80\n',
        f'address = "10.0.0.2"\nport = 80\n{notify_table(own)}\n',
    )
    engine, _, _ = await started(tmp_path, text)
    batch = [(cid(engine.config, a), fail()) for a in ("10.0.0.2", "10.0.0.3")]
    await engine.results(batch)
    await engine.notifier.drain()
    assert ["down:10.0.0.2:80:80 web 10.0.0.2:80 down refused 192.168.3.108"] == lines(own)
    assert ["down:10.0.0.3:80:80 web 10.0.0.3:80 down refused 192.168.3.108"] == lines(shared)
    await engine.close()


async def test_a_reload_changes_how_many_run_at_once(tmp_path: Path) -> None:
    """``max_notify_commands`` takes effect at a reload, not only at start."""
    engine, _, _ = await started(tmp_path, config_text())
    path = write(tmp_path, config_text().replace("[daemon]", "[daemon]\nmax_notify_commands = 2"))
    assert (await engine.reload(lambda: load(path))).ok
    assert 2 == engine.notifier.limit


def _job(out: Path, key: tuple[str, object], word: str, **kw: object) -> Job:
    argv = ("/bin/sh", "-c", f"echo {word} >> {out}")
    return Job(key=key, argv=argv, env={"PATH": "/usr/bin:/bin"}, **kw)  # type: ignore[arg-type]


async def test_a_waiting_change_is_replaced_by_the_next_of_the_same_server(
    tmp_path: Path,
) -> None:
    """One command at a time: a second server's first job waits and is replaced by its
    next one (counted ``coalesced``); the first server's job is untouched."""
    out = tmp_path / "out"
    counted: list[str] = []
    notifier = Notifier(1, counted.append)
    notifier.submit(_job(out, ("web", RS1), "a"))
    notifier.submit(_job(out, ("web", RS2), "b"))
    with capture_logs() as logs:
        notifier.submit(_job(out, ("web", RS2), "c"))
    assert (1, 1) == (notifier.running, notifier.waiting)
    await notifier.drain()
    assert ["a", "c"] == lines(out)
    assert ["coalesced", "done", "done"] == counted
    assert ["command.coalesced"] == [e["event"] for e in logs]


async def test_one_server_runs_its_commands_one_after_the_other(tmp_path: Path) -> None:
    """Even with room for more, a real server's second job waits for its first."""
    out = tmp_path / "out"
    notifier = Notifier(4)
    notifier.submit(_job(out, ("web", RS1), "first"))
    notifier.submit(_job(out, ("web", RS1), "second"))
    assert (1, 1) == (notifier.running, notifier.waiting)
    await notifier.drain()
    assert ["first", "second"] == lines(out)


async def test_a_command_that_hangs_is_killed_after_its_timeout(tmp_path: Path) -> None:
    """A command past its timeout ends as ``timeout``, its process group killed (the
    background child never writes)."""
    out = tmp_path / "out"
    argv = ("/bin/sh", "-c", f"(sleep 5; echo late >> {out}) & sleep 60")
    job = Job(key=("web", RS1), argv=argv, env={"PATH": "/usr/bin:/bin"}, timeout=0.2)
    with capture_logs() as logs:
        assert "timeout" == await run_job(job)
    assert ["command.timeout"] == [e["event"] for e in logs]
    assert [] == lines(out)


async def test_failures_are_logged_with_their_status_and_output(tmp_path: Path) -> None:
    """A non-zero exit, or a command that does not exist, is ``failed``."""
    job = Job(key=("web", RS1), argv=("/bin/sh", "-c", "echo oops; exit 3"), env={})
    missing = Job(key=("web", RS1), argv=(str(tmp_path / "nothing"),), env={})
    with capture_logs() as logs:
        assert "failed" == await run_job(job)
        assert "failed" == await run_job(missing)
    assert [("command.failed", 3, "oops")] == [
        (e["event"], e.get("status"), e.get("output")) for e in logs[:1]
    ]
    assert "command.failed" == logs[1]["event"]


@pytest.mark.skipif(os.geteuid() != 0, reason="switching user needs root")
async def test_the_command_runs_as_the_configured_user(tmp_path: Path) -> None:
    """``user`` runs the command as that user (as an exec check's ``user``): it exits 0
    only when its uid is nobody's, and fails as root."""
    uid = pwd.getpwnam("nobody").pw_uid
    argv = ("/bin/sh", "-c", f'test "$(id -u)" = {uid}')
    env = {"PATH": "/usr/bin:/bin"}
    assert "done" == await run_job(Job(key=("web", RS1), argv=argv, env=env, user="nobody"))
    assert "failed" == await run_job(Job(key=("web", RS1), argv=argv, env=env))


async def test_an_unknown_user_fails_the_command(tmp_path: Path) -> None:
    """A user that does not exist fails the command, named in the log."""
    job = Job(key=("web", RS1), argv=("/bin/true",), env={}, user="no-such-user-lvsd")
    with capture_logs() as logs:
        assert "failed" == await run_job(job)
    assert "no such user 'no-such-user-lvsd'" == logs[0]["error"]


def test_notify_needs_a_command_and_known_keys(tmp_path: Path) -> None:
    """A notify table without up or down, or with an unknown key, is refused."""
    text = config_text(service_extra='notify = { user = "nobody", omega = true }')
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text))
    message = str(caught.value)
    assert 'notify needs "up" or "down"' in message
    assert "services.web.notify.omega" in message


def test_ini_notify_is_the_same_as_toml(tmp_path: Path) -> None:
    """INI's dotted ``notify.down`` gives the same notify table."""
    ini = tmp_path / "lvsd.ini"
    ini.write_text(
        "[service web]\naddress = 192.168.3.108\nport = 80\n"
        "notify.down = /bin/echo {rip}\nnotify.on_stop = true\n"
        "[service web realserver a]\naddress = 10.0.0.2\n"
    )
    notify = load(str(ini)).services[0].notify
    assert notify is not None
    assert (("/bin/echo", "{rip}"), True) == (notify.down, notify.on_stop)
