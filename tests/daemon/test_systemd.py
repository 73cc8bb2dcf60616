"""Tests of the sd_notify client against a real unix datagram socket, as systemd uses."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lvsd.daemon.systemd import Notifier, NullNotifier, socket_address, watchdog_interval


class Listener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def receive(self) -> list[str]:
        data = self.sock.recv(4096)
        return data.decode().split("\n")

    def pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        finally:
            self.sock.settimeout(2)
        return True


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        yield Listener(sock, str(path))


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    name = f"lvsd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        yield Listener(sock, "@" + name)


def test_ready_sends_ready_with_status(listener: Listener) -> None:
    """READY=1 and the status line arrive in one datagram."""
    notifier = Notifier.from_env({"NOTIFY_SOCKET": listener.env_value})

    assert True is notifier.ready("2 services, 5 real servers up")
    assert ["READY=1", "STATUS=2 services, 5 real servers up"] == listener.receive()


def test_reloading_sends_monotonic_timestamp(listener: Listener) -> None:
    """RELOADING=1 carries MONOTONIC_USEC from the injected clock (systemd >= 253)."""
    notifier = Notifier(listener.env_value, monotonic_usec=lambda: 123456789)

    notifier.reloading()

    assert ["RELOADING=1", "MONOTONIC_USEC=123456789"] == listener.receive()


def test_default_clock_is_monotonic_microseconds(listener: Listener) -> None:
    """Without an injected clock MONOTONIC_USEC is CLOCK_MONOTONIC in microseconds."""
    notifier = Notifier(listener.env_value)
    before = time_usec()

    notifier.reloading()

    lines = listener.receive()
    after = time_usec()
    stamp = int(lines[1].removeprefix("MONOTONIC_USEC="))
    assert before <= stamp <= after


def time_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda n: n.stopping(), ["STOPPING=1"]),
        (lambda n: n.watchdog(), ["WATCHDOG=1"]),
        (lambda n: n.status("probing\n3 checks"), ["STATUS=probing 3 checks"]),
        (lambda n: n.extend_timeout(2.5), ["EXTEND_TIMEOUT_USEC=2500000"]),
    ],
)
def test_each_message(
    listener: Listener, call: Callable[[Notifier], object], expected: list[str]
) -> None:
    """Each method sends its assignment; status text is kept on one line."""
    notifier = Notifier(listener.env_value)

    call(notifier)

    assert expected == listener.receive()


def test_abstract_socket_name(abstract_listener: Listener) -> None:
    """A NOTIFY_SOCKET starting with '@' names an abstract socket."""
    notifier = Notifier.from_env({"NOTIFY_SOCKET": abstract_listener.env_value})

    notifier.watchdog()

    assert ["WATCHDOG=1"] == abstract_listener.receive()


def test_socket_address_translation() -> None:
    """'@name' becomes '\\0name'; paths are unchanged."""
    assert "\0sd" == socket_address("@sd")
    assert "/run/systemd/notify" == socket_address("/run/systemd/notify")


def test_null_notifier_without_notify_socket() -> None:
    """Without NOTIFY_SOCKET every call is a silent no-op."""
    notifier = Notifier.from_env({})

    assert isinstance(notifier, NullNotifier)
    assert False is notifier.enabled
    assert False is notifier.ready()
    assert None is notifier.watchdog_interval


def test_missing_socket_does_not_raise(tmp_path: Path) -> None:
    """A vanished notify socket makes send return False instead of raising."""
    notifier = Notifier(str(tmp_path / "gone"))

    assert False is notifier.ready()


def test_from_env_unsets_variables_for_children(listener: Listener) -> None:
    """The notify variables are removed so exec probes do not inherit them."""
    env = {
        "NOTIFY_SOCKET": listener.env_value,
        "WATCHDOG_USEC": "30000000",
        "WATCHDOG_PID": str(os.getpid()),
        "PATH": "/usr/bin",
    }

    notifier = Notifier.from_env(env)

    assert {"PATH": "/usr/bin"} == env
    assert 15.0 == notifier.watchdog_interval


def test_from_env_can_keep_variables(listener: Listener) -> None:
    """unset=False leaves the environment alone."""
    env = {"NOTIFY_SOCKET": listener.env_value}

    Notifier.from_env(env, unset=False)

    assert {"NOTIFY_SOCKET": listener.env_value} == env


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    """Half of WATCHDOG_USEC, only for our own pid and only for a positive number."""
    assert expected == watchdog_interval(env, pid=4242)


def test_no_datagram_from_null_notifier(listener: Listener) -> None:
    """A NullNotifier never reaches a socket, even one that exists."""
    NullNotifier().ready()
    Notifier(listener.env_value).stopping()

    assert ["STOPPING=1"] == listener.receive()
    assert False is listener.pending()
