"""Host preflight: is this kernel set up for the services in the config?

``lvsd check --host`` runs :func:`audit`, which reads ``/proc`` and the module tree and
reports one :class:`Finding` per setting that matters for the config: the value found,
what it means for traffic, and how to fix it. It never changes anything; the fixes are
for the operator (or their configuration management) to apply.

Everything read is under ``proc`` and ``modules_dir``, so tests point them at fake
trees. A setting that cannot be read is reported as a warning, never guessed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from lvsd.config.model import Config
from lvsd.model import Family, Forward


class Severity(StrEnum):
    OK = "ok"
    WARN = "warn"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return {"ok": 0, "warn": 1, "error": 2}[self.value]


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One setting checked: its value, what it means, and how to fix it."""

    severity: Severity
    setting: str  # "net.ipv4.ip_forward", "module ip_vs_wrr"
    value: str | None  # as read; None when it could not be read
    consequence: str  # one sentence
    fix: str = ""  # what to run or change; "" when nothing is needed

    def __str__(self) -> str:
        shown = "unreadable" if self.value is None else self.value
        text = f"{self.severity:<5} {self.setting} = {shown}: {self.consequence}"
        if self.fix:
            text += f"\n      fix: {self.fix}"
        return text


# The fixes, written once.
_MODULES_LOAD = "/etc/modules-load.d/lvsd.conf"
_SYSCTL_FILE = "/etc/sysctl.d/90-lvsd.conf"


def _sysctl_fix(name: str, value: int) -> str:
    return f"sysctl -w {name}={value}, and put '{name} = {value}' in {_SYSCTL_FILE}"


def audit(
    config: Config,
    proc: Path = Path("/proc"),
    modules_dir: Path = Path("/lib/modules"),
    groups: Collection[int] | None = None,
) -> list[Finding]:
    """Check the host for ``config``: IPVS modules, forwarding and IPVS sysctls, and
    ping sockets for icmp checks (for ``groups``, else this process's groups)."""
    release = _read(proc / "sys/kernel/osrelease")
    modules = _Modules(proc, modules_dir / release if release else None)
    findings: list[Finding] = []
    findings += _ip_vs(proc, modules)
    findings += _schedulers(config, modules)
    findings += _forwarding(config, proc)
    findings += _vs_sysctls(config, proc, release)
    findings += _sync_sysctls(config, proc)
    findings += _real_server_notes(config)
    findings += _ping_sockets(config, proc, groups)
    return findings


def worst(findings: Iterable[Finding]) -> Severity:
    """The most severe finding's severity (OK for none)."""
    return max((f.severity for f in findings), key=lambda s: s.rank, default=Severity.OK)


def format_findings(findings: Iterable[Finding]) -> str:
    """The findings, errors first, and a count line: for ``lvsd check --host``."""
    items = sorted(findings, key=lambda f: -f.severity.rank)
    counts = {s: sum(1 for f in items if f.severity is s) for s in Severity}
    lines = [str(f) for f in items]
    lines.append(
        f"{counts[Severity.ERROR]} error(s), {counts[Severity.WARN]} warning(s), "
        f"{counts[Severity.OK]} ok"
    )
    return "\n".join(lines)


# --- reading -------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def kernel_version(release: str | None) -> tuple[int, int] | None:
    """(major, minor) of a release string like ``5.4.0-150-generic``."""
    match = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(match[1]), int(match[2])) if match else None


class _Modules:
    """What the kernel has loaded, has built in, and could load."""

    def __init__(self, proc: Path, tree: Path | None) -> None:
        self.loaded: set[str] = set()
        self.builtin: set[str] = set()
        self.available: set[str] = set()
        # Could the module tree be read? /proc/modules alone cannot tell a missing
        # module from a built-in one (the daemon's sandbox hides the tree).
        self.known = False
        text = _read(proc / "modules")
        if text is not None:
            self.loaded = {line.split()[0] for line in text.splitlines() if line.strip()}
        if tree is None:
            return
        for index, target in (("modules.builtin", self.builtin), ("modules.dep", self.available)):
            listing = _read(tree / index)
            if listing is None:
                continue
            self.known = True
            for line in listing.splitlines():
                path = line.split(":", 1)[0].strip()
                if path:
                    target.add(_module_name(path))
        try:
            names = [p.name for p in (tree / "kernel/net/netfilter/ipvs").iterdir()]
        except OSError:  # absent, or hidden (EACCES under ProtectKernelModules=yes)
            return
        self.known = True
        self.available |= {_module_name(name) for name in names}

    def state(self, name: str) -> str:
        """loaded, builtin, available, missing, or unknown."""
        if name in self.loaded:
            return "loaded"
        if name in self.builtin:
            return "builtin"
        if name in self.available:
            return "available"
        return "missing" if self.known else "unknown"


def _module_name(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    name = name.split(".ko", 1)[0]
    return name.replace("-", "_")


# --- the checks ----------------------------------------------------------------------


def _ip_vs(proc: Path, modules: _Modules) -> list[Finding]:
    setting = "module ip_vs"
    if (proc / "net/ip_vs").exists():
        return [
            Finding(
                severity=Severity.OK, setting=setting, value="loaded", consequence="IPVS is ready."
            )
        ]
    state = modules.state("ip_vs")
    if state in ("available", "builtin", "loaded"):
        return [
            Finding(
                severity=Severity.WARN,
                setting=setting,
                value="not loaded",
                consequence=(
                    "the kernel loads it on lvsd's first request, but its sysctls "
                    "cannot be checked or set before that."
                ),
                fix=f"modprobe ip_vs, and list ip_vs in {_MODULES_LOAD}",
            )
        ]
    if state == "unknown":
        return [
            Finding(
                severity=Severity.WARN,
                setting=setting,
                value=None,
                consequence=(
                    "IPVS is not loaded and the module tree cannot be read; lvsd may fail to start."
                ),
                fix=f"modprobe ip_vs, and list ip_vs in {_MODULES_LOAD}",
            )
        ]
    return [
        Finding(
            severity=Severity.ERROR,
            setting=setting,
            value="missing",
            consequence="this kernel has no IPVS: lvsd cannot program any service.",
            fix="install a kernel built with CONFIG_IP_VS (or its modules package)",
        )
    ]


def _schedulers(config: Config, modules: _Modules) -> list[Finding]:
    users: dict[str, list[str]] = {}
    for service in config.services:
        users.setdefault(str(service.scheduler), []).append(service.name)
    findings = []
    for scheduler in sorted(users):
        name = f"ip_vs_{scheduler}"
        state = modules.state(name)
        services = ", ".join(users[scheduler])
        if state in ("loaded", "builtin", "available"):
            findings.append(
                Finding(
                    severity=Severity.OK,
                    setting=f"module {name}",
                    value=state,
                    consequence=f"scheduler {scheduler} is usable (services: {services}).",
                )
            )
        elif state == "unknown":
            findings.append(
                Finding(
                    severity=Severity.WARN,
                    setting=f"module {name}",
                    value=None,
                    consequence=(
                        f"cannot tell whether scheduler {scheduler} exists "
                        f"(services: {services}); adding them fails if it does not."
                    ),
                    fix=f"modprobe {name}",
                )
            )
        else:
            findings.append(
                Finding(
                    severity=Severity.ERROR,
                    setting=f"module {name}",
                    value="missing",
                    consequence=(
                        f"the kernel has no {scheduler} scheduler: services {services} "
                        "cannot be added."
                    ),
                    fix="choose another scheduler, or use a kernel that has this one",
                )
            )
    return findings


def _nat_families(config: Config) -> set[Family]:
    families: set[Family] = set()
    for service in config.services:
        forwards = [rs.forward for rs in service.real_servers]
        if service.sorry_server is not None:
            forwards.append(service.sorry_server.forward)
        if Forward.NAT in forwards:
            families.add(service.key.family)
    return families


def _forwarding(config: Config, proc: Path) -> list[Finding]:
    findings = []
    for family, name, path in (
        (Family.INET, "net.ipv4.ip_forward", "sys/net/ipv4/ip_forward"),
        (Family.INET6, "net.ipv6.conf.all.forwarding", "sys/net/ipv6/conf/all/forwarding"),
    ):
        if family not in _nat_families(config):
            continue
        value = _read_int(proc / path)
        if value is None:
            findings.append(
                Finding(
                    severity=Severity.WARN,
                    setting=name,
                    value=None,
                    consequence="cannot read it; NAT services need forwarding on.",
                    fix=_sysctl_fix(name, 1),
                )
            )
        elif value == 0:
            findings.append(
                Finding(
                    severity=Severity.ERROR,
                    setting=name,
                    value="0",
                    consequence=(
                        "NAT services will not work: replies from real servers are "
                        "not forwarded back to clients."
                    ),
                    fix=_sysctl_fix(name, 1),
                )
            )
        else:
            findings.append(
                Finding(
                    severity=Severity.OK,
                    setting=name,
                    value=str(value),
                    consequence="NAT replies are forwarded.",
                )
            )
    return findings


def _vs_sysctls(config: Config, proc: Path, release: str | None) -> list[Finding]:
    vs = proc / "sys/net/ipv4/vs"
    if not vs.is_dir():
        return [
            Finding(
                severity=Severity.WARN,
                setting="net.ipv4.vs.*",
                value=None,
                consequence=(
                    "the IPVS sysctls exist only once ip_vs is loaded; they were not checked."
                ),
                fix="modprobe ip_vs and run the check again",
            )
        ]
    findings = []
    name = "net.ipv4.vs.expire_nodest_conn"
    value = _read_int(vs / "expire_nodest_conn")
    if value == 0:
        findings.append(
            Finding(
                severity=Severity.WARN,
                setting=name,
                value="0",
                consequence=(
                    "packets of connections to a removed real server are dropped until the "
                    "connection times out, so those clients hang instead of reconnecting."
                ),
                fix=_sysctl_fix(name, 1),
            )
        )
    else:
        findings.append(_plain(name, value, "connections to a removed real server are reset."))

    if any(service.persistence for service in config.services):
        name = "net.ipv4.vs.expire_quiescent_template"
        value = _read_int(vs / "expire_quiescent_template")
        if value == 0:
            findings.append(
                Finding(
                    severity=Severity.WARN,
                    setting=name,
                    value="0",
                    consequence=(
                        "persistent clients keep being sent to a drained or failed (weight 0) "
                        "real server until their persistence times out."
                    ),
                    fix=_sysctl_fix(name, 1),
                )
            )
        else:
            findings.append(
                _plain(name, value, "persistent clients move off a weight-0 real server.")
            )

    findings.append(_conn_reuse(vs, release))
    return findings


def _sync_sysctls(config: Config, proc: Path) -> list[Finding]:
    """With ``[sync]``: the settings that decide which connections a pair keeps."""
    vs = proc / "sys/net/ipv4/vs"
    if config.sync is None or not vs.is_dir():
        return []
    findings = []
    name = "net.ipv4.vs.sync_version"
    version = _read_int(vs / "sync_version")
    if version == 0:
        old = "the old sync protocol carries no IPv6, firewall-mark or persistence data"
        findings.append(
            _pair_warning(name, "0", f"{old}, and a peer on version 1 ignores it.", name)
        )
    else:
        findings.append(_plain(name, version, "both directors must use the same version."))
    name = "net.ipv4.vs.sync_threshold"
    threshold = _read(vs / "sync_threshold")
    parts = threshold.split() if threshold is not None else []
    if len(parts) == 2:
        first, period = parts
        meaning = (
            f"a connection is synced at its incoming packet {first}, then every {period}: "
            "a younger one is not on the backup yet."
        )
        findings.append(
            Finding(
                severity=Severity.OK, setting=name, value=f"{first} {period}", consequence=meaning
            )
        )
    else:
        findings.append(_plain(name, None, ""))
    sloppy = _read_int(vs / "sloppy_tcp")
    findings.append(
        _plain(
            "net.ipv4.vs.sloppy_tcp",
            sloppy,
            "a director that takes over picks up unsynced TCP connections from any packet."
            if sloppy
            else "a director that takes over drops mid-stream packets of TCP connections "
            "not synced to it yet.",
        )
    )
    if any(service.persistence for service in config.services):
        name = "net.ipv4.vs.sync_persist_mode"
        mode = _read_int(vs / "sync_persist_mode")
        if mode == 1 and not sloppy:
            consequence = (
                "only persistence templates are synced, so the connections of persistent "
                "services break at failover without sloppy_tcp."
            )
            findings.append(
                _pair_warning(name, "1 (sloppy_tcp=0)", consequence, "net.ipv4.vs.sloppy_tcp")
            )
        else:
            meaning = (
                "only persistence templates are synced; sloppy_tcp lets the backup pick "
                "the connections up."
                if mode == 1
                else "the connections of persistent services are synced as well."
            )
            findings.append(_plain(name, mode, meaning))
    return findings


def _pair_warning(setting: str, value: str, consequence: str, fix_setting: str) -> Finding:
    """A warning about a pair's setting, fixed by ``fix_setting`` = 1 on both directors."""
    fix = _sysctl_fix(fix_setting, 1) + " on both directors"
    return Finding(
        severity=Severity.WARN, setting=setting, value=value, consequence=consequence, fix=fix
    )


def _conn_reuse(vs: Path, release: str | None) -> Finding:
    name = "net.ipv4.vs.conn_reuse_mode"
    mode = _read_int(vs / "conn_reuse_mode")
    conntrack = _read_int(vs / "conntrack")
    version = kernel_version(release)
    if mode is None:
        return _plain(name, None, "")
    if mode == 0:
        return Finding(
            severity=Severity.WARN,
            setting=name,
            value="0",
            consequence=(
                "a client reusing a source port keeps reaching the old real server, so "
                "drained or removed servers go on getting traffic from busy clients."
            ),
            fix=_sysctl_fix(name, 1)
            + (" (upgrade to kernel 5.9 or later first)" if version and version < (5, 9) else ""),
        )
    if version is not None and version < (5, 9) and conntrack == 1:
        return Finding(
            severity=Severity.WARN,
            setting=name,
            value=f"{mode} (kernel {release}, conntrack=1)",
            consequence=(
                "before Linux 5.9 a reused source port makes IPVS drop the first SYN, "
                "so busy clients see 1-second connection stalls."
            ),
            fix=(
                "upgrade to kernel 5.9 or later (setting it to 0 trades the stalls for slow drains)"
            ),
        )
    return _plain(name, mode, "reused ports are rescheduled without stalls.")


def _plain(name: str, value: int | None, meaning: str) -> Finding:
    if value is None:
        return Finding(
            severity=Severity.WARN,
            setting=name,
            value=None,
            consequence="cannot read it.",
            fix=f"check that {name} exists on this kernel",
        )
    return Finding(severity=Severity.OK, setting=name, value=str(value), consequence=meaning)


def _real_server_notes(config: Config) -> list[Finding]:
    """Settings that matter on the real servers, which lvsd cannot see from here."""
    dr = any(
        rs.forward is Forward.DR and service.key.family is Family.INET
        for service in config.services
        for rs in service.real_servers
    )
    tun = any(
        rs.forward is Forward.TUN for service in config.services for rs in service.real_servers
    )
    findings = []
    if dr:
        findings.append(
            Finding(
                severity=Severity.OK,
                setting="net.ipv4.conf.all.arp_ignore/arp_announce (real servers)",
                value="not checked here",
                consequence=(
                    "direct-routing real servers hold the VIP and must not answer ARP for "
                    "it, or they steal the VIP's traffic from this director."
                ),
                fix=(
                    "on every DR real server: VIP on lo, arp_ignore=1 and arp_announce=2 "
                    "(all and the outgoing interface); nothing to change on the director"
                ),
            )
        )
    if tun:
        findings.append(
            Finding(
                severity=Severity.OK,
                setting="tunnel interface and rp_filter (real servers)",
                value="not checked here",
                consequence=(
                    "tunnelled real servers must decapsulate (tunl0 or the configured "
                    "GUE/GRE port) and accept packets for the VIP."
                ),
                fix="on every TUN real server: VIP on the tunnel device, rp_filter=0 or 2 on it",
            )
        )
    return findings


def _ping_sockets(config: Config, proc: Path, groups: Collection[int] | None) -> list[Finding]:
    """icmp checks need ping sockets: one of the process's groups in ping_group_range."""
    icmp = any(
        check.kind == "icmp"
        for service in config.services
        for rs in service.real_servers
        for check in rs.checks
    )
    if not icmp:
        return []
    name = "net.ipv4.ping_group_range"
    mine = sorted({os.getegid(), *os.getgroups()} if groups is None else set(groups))
    # every group (systemd's own default): the unit's DynamicUser gid is not fixed
    fix = f"sysctl -w {name}=\"0 2147483647\", and put '{name} = 0 2147483647' in {_SYSCTL_FILE}"
    text = _read(proc / "sys/net/ipv4/ping_group_range")
    words = (text or "").split()
    if len(words) != 2 or not all(w.isdigit() for w in words):
        return [
            Finding(
                severity=Severity.WARN,
                setting=name,
                value=text,
                consequence="cannot read it: icmp checks may be unable to open ping sockets.",
                fix=fix,
            )
        ]
    low, high = int(words[0]), int(words[1])
    value = f"{low} {high}"
    allowed = [g for g in mine if low <= g <= high]
    if allowed:
        return [
            Finding(
                severity=Severity.OK,
                setting=name,
                value=value,
                consequence=f"icmp checks can open ping sockets (group {allowed[0]}).",
            )
        ]
    return [
        Finding(
            severity=Severity.ERROR,
            setting=name,
            value=value,
            consequence=(
                f"icmp checks cannot open ping sockets for groups {', '.join(map(str, mine))}: "
                "each fails with 'ping sockets not permitted', which takes its real server down."
            ),
            fix=fix,
        )
    ]


__all__ = ["Finding", "Severity", "audit", "format_findings", "kernel_version", "worst"]
