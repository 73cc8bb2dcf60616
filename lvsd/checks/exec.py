"""The ``exec`` kind: run a command (no shell) and judge it by its exit status.

Placeholders ``{vip}``, ``{vport}``, ``{rip}``, ``{rport}`` in each argument are
replaced by the VIP, virtual port, real server address and probed port. The command
runs through :func:`lvsd.child.run`: its own session, stdin from /dev/null, no
descriptor of lvsd's, no capability (unprivileged), as ``options.user`` when set (in
that user's groups; ``options.group`` instead of its primary group). When the run ends
(exit, timeout, cancel) its whole process group is killed (SIGKILL) and it is reaped:
nothing is left behind. Its exit status decides, even when a child of it still holds
its output open.

Exit 0: up. Exit 1: down. Exit 2..255: up with weight ``code - 2`` (bounded by
``options.max_weight``, else the configured weight) when ``options.dynamic``, else
down. Killed by a signal: down.

Details: ``"exec ['/bin/check', '10.0.0.2']: exit 1: <first line of output>"``,
``"exec [...]: timeout after 1.0s"``, ``"exec [...]: exit 7, weight 5"``,
``"exec [...]: not found"``.
"""

from __future__ import annotations

import signal

from lvsd import child
from lvsd.checks.base import ProbeResult, Target
from lvsd.checks.net import Fail, Progress, Verdict, run_timed
from lvsd.checks.probe import ProbeBase
from lvsd.config.model import CheckSpec, ExecOptions

#: Bytes of the command's output kept for the detail (the rest is read and dropped).
OUTPUT_LIMIT = 256


def render_command(command: tuple[str, ...], target: Target, port: int) -> tuple[str, ...]:
    """Substitute the placeholders in each argument (no shell, no other expansion)."""
    values = {
        "{vip}": "" if target.vip is None else str(target.vip),
        "{vport}": str(target.vport),
        "{rip}": str(target.address),
        "{rport}": str(port),
    }
    return child.substitute(command, values)


def verdict_of_exit(code: int, options: ExecOptions, weight: int) -> tuple[bool, str, int | None]:
    """``(ok, text, weight)`` for an exit status (negative: killed by that signal)."""
    if code == 0:
        return True, "exit 0", None
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return False, f"killed by {name}", None
    if code >= 2 and options.dynamic:
        bound = options.max_weight if options.max_weight is not None else weight
        new_weight = min(code - 2, bound)
        return True, f"exit {code}, weight {new_weight}", new_weight
    return False, f"exit {code}", None


class ExecProbe(ProbeBase[ExecOptions]):
    """Run the configured command against the target."""

    __slots__ = ("_argv",)
    options_type = ExecOptions
    kind = "exec"

    def __init__(self, spec: CheckSpec, target: Target) -> None:
        super().__init__(spec, target)
        self._argv = render_command(self._options.command, target, self._port)

    @property
    def argv(self) -> tuple[str, ...]:
        return self._argv

    async def probe(self) -> ProbeResult:
        progress = Progress(f"exec {list(self._argv)}")
        return await run_timed(self._spec.timeout, progress, lambda: self._run(progress))

    async def _run(self, progress: Progress) -> Verdict:
        if not self._argv:
            raise Fail("exec []: empty command", "error")
        identity = _identity(self._options, progress)
        try:
            exited = await child.run(
                self._argv, output_limit=OUTPUT_LIMIT, identity=identity, unprivileged=True
            )
        except FileNotFoundError:
            raise Fail(f"{progress.step}: not found", "error") from None
        except PermissionError:
            raise Fail(f"{progress.step}: permission denied", "error") from None
        ok, text, weight = verdict_of_exit(exited.code, self._options, self._target.weight)
        detail = f"{progress.step}: {text}"
        first_line = exited.output.decode("utf-8", "replace").strip().split("\n", 1)[0].strip()
        if first_line:
            detail += f": {first_line}"
        if ok:
            return Verdict(ok=True, detail=detail, weight=weight)
        return Verdict.fail(detail, "exit")


def _identity(options: ExecOptions, progress: Progress) -> child.Identity:
    try:
        return child.identity_of(options.user, options.group)
    except LookupError as exc:
        raise Fail(f"{progress.step}: {exc.args[0]}", "error") from None
