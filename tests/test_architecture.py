"""The import rules of docs/architecture.md, checked on the source: which part of lvsd
may import which, which third-party packages each may use, and who runs the loop."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lvsd"

#: The parts of lvsd, by module prefix (the longest prefix wins).
PARTS = {
    "lvsd": "root",
    "lvsd.errors": "core",
    "lvsd.model": "core",
    "lvsd.config": "core",
    "lvsd.health": "core",
    "lvsd.desired": "core",
    "lvsd.plan": "core",
    "lvsd.checks": "checks",
    "lvsd.checks.base": "probe-result",
    "lvsd.ipvs": "ipvs",
    "lvsd.ipvs.base": "backend",
    "lvsd.engine": "engine",
    "lvsd.observe": "observe",
    "lvsd.daemon": "daemon",
    "lvsd.preflight": "preflight",
    "lvsd.control": "control",
    "lvsd.log": "log",
    "lvsd.child": "child",
    "lvsd.importer": "importer",
    "lvsd.apply": "apply",
    "lvsd.cli": "cli",
    "lvsd.cli_docs": "cli",
    "lvsd.__main__": "cli",
}

#: What each part may import of lvsd (besides itself and ``lvsd`` for the version).
ALLOWED = {
    "root": set(),
    "core": set(),
    "log": set(),
    "child": set(),
    "control": {"core"},
    "preflight": {"core"},
    "importer": {"core"},
    "probe-result": {"core"},
    "backend": {"core"},
    "checks": {"core", "probe-result", "child"},
    "ipvs": {"core", "backend"},
    "engine": {"core", "probe-result", "backend", "child"},
    "observe": {"core", "probe-result", "preflight"},
    "apply": {"core", "backend", "ipvs"},
    "daemon": {
        "core",
        *("probe-result", "checks", "backend", "ipvs"),
        *("engine", "observe", "preflight", "control", "child"),
    },
    "cli": set(PARTS.values()),
}

#: Third-party and runtime packages, and the parts that may import them.
EXTERNAL = {
    "asyncio": {
        "child",
        "checks",
        "probe-result",
        "ipvs",
        "engine",
        "observe",
        "daemon",
        "control",
    },
    "pyroute2": {"ipvs"},
    "aiohttp": {"checks", "observe"},
    "prometheus_client": {"observe", "daemon"},
    "dns": {"checks", "core"},  # dnspython: the config validates record types with it
    "yaml": {"core"},  # the config reads the HTTP port's web config file (exporter format)
    "bcrypt": {"observe"},  # the HTTP port checks basic auth passwords
    "structlog": {"log", "checks", "ipvs", "engine", "observe", "daemon", "control"},
}
EXTERNAL["asyncio"] |= {"apply"}  # `lvsd apply`'s one-shot asyncio.run: the written exception

#: The only modules that may call ``asyncio.run``.
LOOP_OWNERS = {"lvsd.daemon.lifecycle", "lvsd.apply"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def part_of(module: str) -> str | None:
    """The part a module of lvsd belongs to (None for a name outside lvsd)."""
    best = None
    for prefix in PARTS:
        if (module == prefix or module.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(best)
        ):
            best = prefix
    return PARTS[best] if best is not None else None


def sources() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield module_name(path), ast.parse(path.read_text(), str(path))


def imports(tree: ast.Module, module: str) -> Iterator[str]:
    """Every module name ``tree`` imports, at any depth (lazy imports included)."""
    package = module if module.count(".") == 0 else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            if base in ("lvsd", *(p for p in PARTS if p.count(".") == 1)):
                # ``from lvsd.observe import api``: the names may be modules
                yield from (f"{base}.{alias.name}" for alias in node.names)


def violations() -> Iterator[str]:
    for module, tree in sources():
        mine = part_of(module)
        assert mine is not None
        for name in imports(tree, module):
            other = part_of(name)
            if other is not None:
                if other not in (mine, "root") and other not in ALLOWED[mine]:
                    yield f"{module} ({mine}) imports {name} ({other})"
                continue
            top = name.split(".")[0]
            if top in EXTERNAL and mine not in EXTERNAL[top]:
                yield f"{module} ({mine}) imports {top}"


def test_every_module_of_lvsd_belongs_to_a_part() -> None:
    """A new package or top-level module is placed in docs/architecture.md's layers."""
    unplaced = [m for m, _ in sources() if part_of(m) in (None, "root") and m != "lvsd"]
    assert [] == unplaced


def test_imports_follow_the_layers() -> None:
    """The pure core imports no runtime part, checks and ipvs never meet, the engine
    sees only the protocols, observe only the core, and only the daemon wires it all."""
    assert [] == sorted(set(violations()))


def test_only_the_daemon_and_apply_run_the_event_loop() -> None:
    """``asyncio.run`` is called in ``lvsd run`` and in the one-shot ``lvsd apply``."""
    callers = set()
    for module, tree in sources():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "run"
                and isinstance(node.value, ast.Name)
                and node.value.id == "asyncio"
            ):
                callers.add(module)
    assert LOOP_OWNERS == callers


@pytest.mark.parametrize(
    ("module", "name", "allowed"),
    [
        ("lvsd.health.state", "lvsd.checks.base", False),
        ("lvsd.checks.tcp", "lvsd.ipvs.netlink", False),
        ("lvsd.ipvs.netlink", "lvsd.checks.base", False),
        ("lvsd.engine.reconcile", "lvsd.observe.metrics", False),
        ("lvsd.engine.reconcile", "lvsd.ipvs.base", True),
        ("lvsd.observe.api", "lvsd.engine.reconcile", False),
        ("lvsd.daemon.lifecycle", "lvsd.engine.reconcile", True),
        ("lvsd.engine.announce", "lvsd.child", True),
        ("lvsd.checks.exec", "lvsd.child", True),
        ("lvsd.child", "lvsd.checks.base", False),
    ],
)
def test_the_rules_say_what_the_docs_say(module: str, name: str, allowed: bool) -> None:
    """A few of the written rules, spelled out, so the tables above cannot drift into
    allowing everything."""
    mine, other = part_of(module), part_of(name)
    assert mine is not None
    assert other is not None
    assert allowed == (other == mine or other in ALLOWED[mine])
