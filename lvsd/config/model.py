"""The config as frozen values. Both loaders (TOML and INI) produce these.

Defaults live here and only here. Every type is hashable, so identical check specs
can be recognised (and probed once) by equality.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from lvsd.model import (
    DestKey,
    Family,
    Forward,
    IPAddress,
    Protocol,
    SchedFlag,
    Scheduler,
    ServiceKey,
    TunnelType,
    format_hostport,
)


class FailureAction(StrEnum):
    """What a failed real server becomes in the kernel table."""

    QUIESCE = "quiesce"  # stays, weight 0: existing connections finish
    REMOVE = "remove"  # deleted from the service


class InitialState(StrEnum):
    DOWN = "down"  # out of the pool until the first success (keepalived's alpha)
    UP = "up"


# --- check options, one type per kind ----------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpOptions:
    send: bytes | None = None  # bytes to send after connecting
    expect: bytes | None = None  # bytes the answer must contain


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusRange:
    low: int
    high: int

    def __contains__(self, status: object) -> bool:
        return isinstance(status, int) and self.low <= status <= self.high

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpOptions:
    """Options of the ``http`` and ``https`` kinds (``https`` sets ``tls``)."""

    tls: bool = False
    method: str = "GET"
    path: str = "/"
    status: tuple[StatusRange, ...] = (StatusRange(low=200, high=299),)
    body_regex: str | None = None
    body_not_regex: str | None = None  # the body must not match (keepalived's regex_no_match)
    body_digest: str | None = None  # hex MD5 of the body, keepalived's "digest"
    host: str | None = None  # Host header (virtual host)
    headers: tuple[tuple[str, str], ...] = ()
    header_regex: tuple[
        tuple[str, str], ...
    ] = ()  # response header name -> regex its value must match
    keepalive: bool = False
    verify: bool = True
    ca_file: str | None = None
    sni: str | None = None
    client_cert: str | None = None
    client_key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecOptions:
    """An external command. Placeholders in ``command``: ``{vip}``, ``{vport}``,
    ``{rip}``, ``{rport}``. Exit 0 = up, 1 = down, 2..255 = up with weight code-2
    when ``dynamic`` (keepalived's misc_dynamic)."""

    command: tuple[str, ...]
    user: str | None = None
    group: str | None = None  # instead of the user's primary group
    dynamic: bool = False
    max_weight: int | None = None  # bound for dynamic weights (default: configured weight)


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsOptions:
    name: str
    type: str = "A"
    expect: tuple[str, ...] = ()  # answers that must be present (text form)
    rcode: str = "NOERROR"


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpOptions:
    helo: str | None = None  # send EHLO with this name when set


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeOptions:
    """The handshake kinds (imap, pop3, ftp, pgsql, ldap) take no options; mysql's add one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MysqlOptions(HandshakeOptions):
    """The ``mysql`` kind: with ``user``, log in as that password-less user (HAProxy's
    ``mysql-check user``), so the server does not count an aborted connection."""

    user: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class IcmpOptions:
    """The ``icmp`` kind (one echo request) takes no options."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SipOptions:
    """One SIP OPTIONS request; the final response's status must be in ``status``."""

    tcp: bool = False  # over TCP instead of UDP
    status: tuple[StatusRange, ...] = (StatusRange(low=200, high=299),)


@dataclass(frozen=True, slots=True, kw_only=True)
class RadiusOptions:
    """A RADIUS Status-Server request, signed with the shared secret."""

    secret: str = field(repr=False)  # the client secret the server has for the director


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentOptions:
    """HAProxy's agent-check on a separate port (``port`` of the CheckSpec)."""

    send: str = ""  # line sent after connecting (HAProxy's agent-send)


@dataclass(frozen=True, slots=True, kw_only=True)
class UdpOptions:
    send: bytes = b""
    expect: bytes | None = None  # None: up unless an ICMP unreachable comes back
    require_reply: bool = False


CheckOptions = (
    TcpOptions
    | HttpOptions
    | ExecOptions
    | DnsOptions
    | SmtpOptions
    | AgentOptions
    | UdpOptions
    | HandshakeOptions
    | MysqlOptions
    | IcmpOptions
    | SipOptions
    | RadiusOptions
)

#: The check kinds and the option type each one takes.
CHECK_KINDS: dict[str, type[CheckOptions]] = {
    "tcp": TcpOptions,
    "http": HttpOptions,
    "https": HttpOptions,
    "exec": ExecOptions,
    "dns": DnsOptions,
    "smtp": SmtpOptions,
    "agent": AgentOptions,
    "udp": UdpOptions,
    "imap": HandshakeOptions,
    "pop3": HandshakeOptions,
    "ftp": HandshakeOptions,
    "mysql": MysqlOptions,
    "pgsql": HandshakeOptions,
    "ldap": HandshakeOptions,
    "icmp": IcmpOptions,
    "sip": SipOptions,
    "radius": RadiusOptions,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckSpec:
    """One health check of one real server. Equal specs on the same target are the
    same check (probed once, shared by every service that uses it)."""

    kind: str
    options: CheckOptions
    interval: float = 2.0  # seconds between probe starts
    timeout: float = 1.0  # seconds a probe may take
    rise: int = 2  # consecutive successes to go up
    fall: int = 3  # consecutive failures to go down
    port: int | None = None  # probe this port instead of the real server's
    source: str | None = None  # source address (bindto)
    source_port: int | None = None

    def __str__(self) -> str:
        text = self.kind
        if self.port is not None:
            text += f" port {self.port}"
        return text


# --- services --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Notify:
    """Commands run when a real server goes up or down (keepalived's notify_up and
    notify_down, ldirectord's callback); placeholders as in ``lvsd.engine.notify``."""

    up: tuple[str, ...] = ()
    down: tuple[str, ...] = ()
    user: str | None = None  # run as this user (as an exec check's ``user``)
    group: str | None = None  # instead of the user's primary group
    timeout: float = 30.0  # seconds before the command's process group is killed
    on_stop: bool = False  # on lvsd's stop, run ``down`` for each server up (keepalived's omega)


@dataclass(frozen=True, slots=True, kw_only=True)
class RealServer:
    address: IPAddress
    port: int
    weight: int = 1
    forward: Forward = Forward.NAT
    tunnel: TunnelType | None = None
    tunnel_port: int = 0
    upper_threshold: int = 0
    lower_threshold: int = 0
    checks: tuple[CheckSpec, ...] = ()
    notify: Notify | None = None  # replaces the service's
    #: ``key``, built once (the health, desired table and reload read it per server).
    _key: DestKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", DestKey.of(self.address, self.port))

    @property
    def key(self) -> DestKey:
        return self._key

    def __str__(self) -> str:
        return f"{format_hostport(self.address, self.port)} w={self.weight}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SorryServer:
    address: IPAddress
    port: int
    weight: int = 1
    forward: Forward = Forward.NAT
    _key: DestKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", DestKey.of(self.address, self.port))

    @property
    def key(self) -> DestKey:
        return self._key


@dataclass(frozen=True, slots=True, kw_only=True)
class Quorum:
    """The pool is 'up' while the sum of live weights is at least ``minimum``;
    it goes down below ``minimum - hysteresis`` and up again at ``minimum + hysteresis``."""

    minimum: int = 1
    hysteresis: int = 0
    up_command: tuple[str, ...] = ()
    down_command: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PanicGuard:
    """Fail-open: if more than ``threshold`` (0..1) of the real servers fail within one
    check interval and the pool has at least ``min_servers``, keep the last good
    weights."""

    threshold: float = 0.5
    min_servers: int = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualServiceConfig:
    name: str
    key: ServiceKey
    scheduler: Scheduler = Scheduler.WRR
    flags: frozenset[SchedFlag] = frozenset()
    one_packet: bool = False
    persistence: int = 0  # seconds
    persistence_netmask: int = 0  # prefix length, 0 = host
    on_failure: FailureAction = FailureAction.QUIESCE
    initial_state: InitialState = InitialState.DOWN
    slow_start: float = 0.0  # seconds to ramp from weight 1 to the configured weight
    sorry_server: SorryServer | None = None
    quorum: Quorum | None = None
    panic: PanicGuard | None = None
    notify: Notify | None = None
    real_servers: tuple[RealServer, ...] = ()

    def __str__(self) -> str:
        return f"{self.name} ({self.key} {self.scheduler})"


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonConfig:
    """Process-wide settings: where lvsd keeps its state and listens."""

    state_dir: str = "/var/lib/lvsd"
    control_socket: str = "/run/lvsd/control.sock"
    control_group: str | None = None  # group allowed to use the control socket
    metrics_listen: str = "127.0.0.1:9475"  # "" disables the HTTP endpoint
    reconcile_interval: float = 30.0  # seconds between drift checks
    max_concurrent_probes: int = 1000
    max_exec_probes: int = 32
    drain_timeout: float = 300.0  # removed real servers: wait this long for connections
    # a reload may remove at most this share of the real servers (of all, and of each
    # service it keeps) without `lvsd reload --force`; 1.0 turns the guard off
    reload_max_removed: float = 0.5
    remove_on_stop: bool = False
    adopt_up: bool = True  # real servers found with weight > 0 count as up until probed
    max_notify_commands: int = 8  # notify commands running at once (lvsd.engine.notify)


@dataclass(frozen=True, slots=True, kw_only=True)
class IpvsTimeouts:
    """The kernel's connection timeouts in seconds (``ipvsadm --set``, keepalived's
    lvs_timeouts); None leaves the kernel's value alone."""

    tcp: int | None = None
    tcp_fin: int | None = None
    udp: int | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.tcp, self.tcp_fin, self.udp))


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    path: str
    daemon: DaemonConfig = DaemonConfig()
    ipvs: IpvsTimeouts = IpvsTimeouts()
    services: tuple[VirtualServiceConfig, ...] = ()

    @property
    def real_server_count(self) -> int:
        return sum(len(s.real_servers) for s in self.services)

    @property
    def check_count(self) -> int:
        return sum(len(r.checks) for s in self.services for r in s.real_servers)

    def summary(self) -> str:
        counts = (
            (len(self.services), "service"),
            (self.real_server_count, "real server"),
            (self.check_count, "check"),
        )
        return f"{self.path}: " + ", ".join(f"{n} {w}{'s' if n != 1 else ''}" for n, w in counts)


__all__ = [
    "CHECK_KINDS",
    "AgentOptions",
    "CheckOptions",
    "CheckSpec",
    "Config",
    "DaemonConfig",
    "DnsOptions",
    "ExecOptions",
    "FailureAction",
    "Family",
    "HandshakeOptions",
    "HttpOptions",
    "IcmpOptions",
    "InitialState",
    "IpvsTimeouts",
    "MysqlOptions",
    "Notify",
    "PanicGuard",
    "Protocol",
    "Quorum",
    "RadiusOptions",
    "RealServer",
    "SipOptions",
    "SmtpOptions",
    "SorryServer",
    "StatusRange",
    "TcpOptions",
    "UdpOptions",
    "VirtualServiceConfig",
]
