"""Talking to systemd: the ``sd_notify`` protocol, without a library.

systemd passes a datagram socket in ``$NOTIFY_SOCKET`` (a path, or an abstract name
written with a leading ``@``); a service reports its state by sending newline-separated
``KEY=value`` assignments to it. lvsd sends:

* ``READY=1`` once the first reconcile has programmed the kernel (and after every reload);
* ``RELOADING=1`` + ``MONOTONIC_USEC=...`` when a SIGHUP reload starts (systemd >= 253
  wants the timestamp to match the reload to its request; older versions ignore it);
* ``STOPPING=1`` when shutdown begins;
* ``STATUS=...`` a one-line summary shown by ``systemctl status``;
* ``WATCHDOG=1`` at least every :func:`watchdog_interval`, only while the loop is
  healthy (the daemon checks three times per interval).

Without ``$NOTIFY_SOCKET`` (not started by systemd, or ``Type=simple``) every call is a
no-op: :meth:`Notifier.from_env` returns a :class:`NullNotifier`. Sending never raises:
a lost notification must not take the daemon down, so failures are returned as False.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, MutableMapping

#: The variables systemd sets for the notify protocol. They are removed from the
#: environment by :meth:`Notifier.from_env` so that exec probes (child processes)
#: cannot send notifications in lvsd's name.
NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def socket_address(value: str) -> str:
    """The address to ``sendto`` for a ``$NOTIFY_SOCKET`` value: ``@name`` is the
    abstract name ``\\0name``; anything else is a filesystem path."""
    if value.startswith("@"):
        return "\0" + value[1:]
    return value


def watchdog_interval(
    environ: MutableMapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """How often to send ``WATCHDOG=1``, in seconds: half of ``$WATCHDOG_USEC`` (as
    ``sd_watchdog_enabled(3)`` recommends), or None when the watchdog is off, the value
    is not a positive integer, or ``$WATCHDOG_PID`` names another process."""
    env = os.environ if environ is None else environ
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 1_000_000 / 2


class Notifier:
    """Sends state changes to systemd's notify socket at ``address``.

    ``monotonic_usec`` is the clock for ``MONOTONIC_USEC`` (injected in tests); it must
    be ``CLOCK_MONOTONIC`` in microseconds, which is what systemd compares against.
    """

    def __init__(
        self,
        address: str,
        *,
        watchdog: float | None = None,
        monotonic_usec: Callable[[], int] = _monotonic_usec,
    ) -> None:
        self.address = address
        #: Seconds between ``WATCHDOG=1`` pings, or None (see :func:`watchdog_interval`).
        self.watchdog_interval = watchdog
        self._monotonic_usec = monotonic_usec

    @classmethod
    def from_env(
        cls,
        environ: MutableMapping[str, str] | None = None,
        *,
        unset: bool = True,
        pid: int | None = None,
    ) -> Notifier:
        """The notifier systemd asked for, or a :class:`NullNotifier`.

        With ``unset`` (the default) the notify variables are removed from ``environ``
        (``os.environ`` by default) once read, so child processes do not inherit them.
        """
        env = os.environ if environ is None else environ
        value = env.get("NOTIFY_SOCKET", "")
        interval = watchdog_interval(env, pid)
        if unset:
            for name in NOTIFY_VARIABLES:
                env.pop(name, None)
        if not value:
            return NullNotifier()
        return cls(socket_address(value), watchdog=interval)

    @property
    def enabled(self) -> bool:
        return True

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; True when the socket took it."""
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError:
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) is complete."""
        lines = ["READY=1"]
        if status is not None:
            lines.append(_status_line(status))
        return self.send(*lines)

    def reloading(self) -> bool:
        """A reload has begun; send :meth:`ready` when it is done."""
        return self.send("RELOADING=1", f"MONOTONIC_USEC={self._monotonic_usec()}")

    def stopping(self) -> bool:
        """Shutdown has begun."""
        return self.send("STOPPING=1")

    def status(self, text: str) -> bool:
        """A one-line status for ``systemctl status`` (newlines become spaces)."""
        return self.send(_status_line(text))

    def watchdog(self) -> bool:
        """Tell systemd the service is alive. Send only while the loop is healthy."""
        return self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before systemd gives up on start-up or shutdown."""
        return self.send(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def __repr__(self) -> str:
        return f"Notifier({self.address!r}, watchdog={self.watchdog_interval!r})"


class NullNotifier(Notifier):
    """The notifier used when systemd is not listening: every call does nothing."""

    def __init__(self) -> None:
        super().__init__("", watchdog=None)

    @property
    def enabled(self) -> bool:
        return False

    def send(self, *assignments: str) -> bool:
        return False

    def __repr__(self) -> str:
        return "NullNotifier()"


def _status_line(text: str) -> str:
    return "STATUS=" + " ".join(text.split())
