"""The one validator: a merged config tree -> :class:`~lvsd.config.model.Config`.

Every problem is collected (never the first one only), each naming its key path and,
through ``locate``, its file and line. Defaults are not repeated here: a key left out
is left out of the dataclass call, so the defaults of :mod:`lvsd.config.model` apply.
The one default this module owns is the protocol of an address service (tcp). Each
scalar is converted, and its problem worded, by :mod:`lvsd.config.values`.

Inheritance: ``[defaults]`` -> service -> real server for ``forward``; ``[defaults]``
-> service for scheduler, on_failure, initial_state and slow_start; service ->
real server for ``tunnel``/``tunnel_port``; ``[defaults.check]`` -> every check for
interval, timeout, rise and fall. A real server's ``checks``/``check`` replace the
service's.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, get_type_hints

from lvsd.config.document import Tree
from lvsd.config.locate import KeyPath, render_path
from lvsd.config.model import (
    CHECK_KINDS,
    CheckOptions,
    CheckSpec,
    Config,
    DaemonConfig,
    DnsOptions,
    FailureAction,
    HttpOptions,
    InitialState,
    IpvsTimeouts,
    MysqlOptions,
    Notify,
    PanicGuard,
    Quorum,
    RadiusOptions,
    RealServer,
    SorryServer,
    VirtualServiceConfig,
)
from lvsd.config.options import (
    OptionProblem,
    dns_option_problems,
    http_option_problems,
    mysql_option_problems,
)
from lvsd.config.values import (
    MAX_FWMARK,
    MAX_PORT,
    MAX_U32,
    MIN_INTERVAL,
    Invalid,
    by_type,
    did_you_mean,
    show,
    to_abs_path,
    to_bool,
    to_command,
    to_enum,
    to_float,
    to_int,
    to_ip,
    to_listen,
    to_socket_path,
    to_str,
    to_str_list,
)
from lvsd.errors import Problem
from lvsd.model import (
    FLAGGED_SCHEDULERS,
    MAX_WEIGHT,
    DestKey,
    Family,
    Forward,
    IPAddress,
    Protocol,
    SchedFlag,
    Scheduler,
    ServiceKey,
    TunnelType,
)

#: Where a key path was written: (file, line or None).
Locate = Callable[[KeyPath], tuple[str, int | None]]

#: The protocol of an address service that names none.
DEFAULT_PROTOCOL = Protocol.TCP

TOP_KEYS = ("include", "daemon", "defaults", "ipvs", "services")
DEFAULTS_KEYS = ("scheduler", "forward", "on_failure", "initial_state", "slow_start", "check")
CHECK_TIMING_KEYS = ("interval", "timeout", "rise", "fall")
CHECK_COMMON_KEYS = ("kind", *CHECK_TIMING_KEYS, "port", "source", "source_port")
SERVICE_KEYS = (
    "address",
    "port",
    "protocol",
    "fwmark",
    "family",
    "scheduler",
    "flags",
    "forward",
    "tunnel",
    "tunnel_port",
    "persistence",
    "persistence_netmask",
    "one_packet",
    "on_failure",
    "initial_state",
    "slow_start",
    "sorry_server",
    "quorum",
    "panic",
    "notify",
    "check",
    "checks",
    "real_servers",
)
REAL_SERVER_KEYS = (
    "address",
    "port",
    "weight",
    "forward",
    "tunnel",
    "tunnel_port",
    "upper_threshold",
    "lower_threshold",
    "notify",
    "check",
    "checks",
)
SORRY_KEYS = ("address", "port", "weight", "forward")
QUORUM_KEYS = ("minimum", "hysteresis", "up_command", "down_command")
PANIC_KEYS = ("threshold", "min_servers")
NOTIFY_KEYS = ("up", "down", "user", "group", "timeout", "on_stop")
IPVS_KEYS = ("tcp", "tcp_fin", "udp")
#: The largest connection timeout the kernel takes (INT_MAX / HZ, with HZ up to 1000).
MAX_IPVS_TIMEOUT = 2147483
#: Options set by the kind itself, never by the user.
_IMPLIED_OPTIONS = frozenset({"tls"})


def defaults_of(cls: type[Any]) -> dict[str, Any]:
    """The default of every field of dataclass ``cls`` that has one."""
    result: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            result[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            result[f.name] = f.default_factory()
    return result


#: Per-class facts computed once, not once per check (a config has thousands of
#: checks, and resolving type hints is slow).
_DEFAULTS: dict[type[Any], Mapping[str, Any]] = {}
_HINTS: dict[type[Any], Mapping[str, Any]] = {}
_OPTION_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _defaults(cls: type[Any]) -> Mapping[str, Any]:
    """:func:`defaults_of`, computed once per class (read only)."""
    found = _DEFAULTS.get(cls)
    if found is None:
        found = _DEFAULTS[cls] = types.MappingProxyType(defaults_of(cls))
    return found


def _hints(cls: type[Any]) -> Mapping[str, Any]:
    """The resolved field types of dataclass ``cls``, computed once per class."""
    found = _HINTS.get(cls)
    if found is None:
        found = _HINTS[cls] = types.MappingProxyType(get_type_hints(cls))
    return found


def _option_names(cls: type[Any]) -> tuple[str, ...]:
    """The options a user may set on a check whose options are ``cls``."""
    found = _OPTION_NAMES.get(cls)
    if found is None:
        names = (f.name for f in dataclasses.fields(cls) if f.name not in _IMPLIED_OPTIONS)
        found = _OPTION_NAMES[cls] = tuple(names)
    return found


class _Table:
    """A table of the tree at ``path``, with typed getters that report problems."""

    def __init__(self, builder: _Builder, data: Tree, path: KeyPath) -> None:
        self.builder = builder
        self.data = data
        self.path = path

    def at(self, key: str | int) -> KeyPath:
        return (*self.path, key)

    def has(self, key: str) -> bool:
        return key in self.data

    def allow(self, keys: Iterable[str], where: str) -> None:
        allowed = list(keys)
        for key in self.data:
            if key not in allowed:
                self.builder.error(
                    self.at(key), f"unknown key in {where}{did_you_mean(key, allowed)}"
                )

    def get(self, key: str, convert: Callable[[object], Any]) -> Any:
        """The converted value of ``key``; None when absent or wrong (reported)."""
        if key not in self.data:
            return None
        try:
            return convert(self.data[key])
        except Invalid as exc:
            self.builder.error(self.at(key), str(exc))
            return None

    def table(self, key: str) -> _Table | None:
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, dict):
            self.builder.error(self.at(key), f"expected a table, got {show(value)}")
            return None
        return _Table(self.builder, value, self.at(key))

    def tables(self, key: str) -> list[_Table] | None:
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, list):
            self.builder.error(self.at(key), f"expected a list of tables, got {show(value)}")
            return None
        result = []
        for index, item in enumerate(value):
            if isinstance(item, dict):
                result.append(_Table(self.builder, item, (*self.at(key), index)))
            else:
                self.builder.error((*self.at(key), index), f"expected a table, got {show(item)}")
        return result

    def required(self, key: str, what: str) -> bool:
        if key in self.data:
            return True
        self.builder.error(self.path, f"missing {show(key)} ({what})")
        return False


@dataclasses.dataclass(slots=True)
class _Inherited:
    """What a service passes down to its real servers."""

    forward: Forward | None = None
    tunnel: TunnelType | None = None
    tunnel_port: int | None = None


class _Builder:
    def __init__(self, locate: Locate) -> None:
        self.locate = locate
        self.problems: list[Problem] = []
        self.check_defaults: dict[str, Any] = {}
        self.service_defaults: dict[str, Any] = {}

    def error(self, path: KeyPath, message: str) -> None:
        file, line = self.locate(path)
        self.problems.append(Problem(file, render_path(path), message, line))

    # -- top level

    def config(self, tree: Tree, path: str) -> Config:
        root = _Table(self, tree, ())
        root.allow(TOP_KEYS, "the top level")
        kwargs: dict[str, Any] = {}
        daemon = root.table("daemon")
        if daemon is not None:
            kwargs["daemon"] = self.daemon(daemon)
        defaults = root.table("defaults")
        if defaults is not None:
            self.defaults(defaults)
        ipvs = root.table("ipvs")
        if ipvs is not None:
            kwargs["ipvs"] = self.ipvs(ipvs)
        services = root.table("services")
        if services is not None:
            kwargs["services"] = self.services(services)
        return Config(path=path, **kwargs)

    def daemon(self, table: _Table) -> DaemonConfig:
        names = [f.name for f in dataclasses.fields(DaemonConfig)]
        table.allow(names, "[daemon]")
        hints = get_type_hints(DaemonConfig)
        limits: dict[str, Callable[[object], Any]] = {
            "reconcile_interval": lambda v: to_float(v, MIN_INTERVAL),
            "drain_timeout": lambda v: to_float(v, 0.0),
            "reload_max_removed": lambda v: to_float(v, 0.0, high=1.0),
            "max_concurrent_probes": lambda v: to_int(v, 1, None),
            "max_exec_probes": lambda v: to_int(v, 1, None),
            "max_notify_commands": lambda v: to_int(v, 1, None),
            "metrics_listen": to_listen,
            "control_socket": to_socket_path,
            "state_dir": to_abs_path,
        }
        kwargs = {}
        for name in names:
            value = table.get(name, limits.get(name) or by_type(hints[name], name))
            if value is not None:
                kwargs[name] = value
        return DaemonConfig(**kwargs)

    def ipvs(self, table: _Table) -> IpvsTimeouts:
        """``[ipvs]``: the kernel's connection timeouts (seconds, 1 up to the kernel's
        bound)."""
        table.allow(IPVS_KEYS, "[ipvs]")
        values = {
            key: table.get(key, lambda v: to_int(v, 1, MAX_IPVS_TIMEOUT)) for key in IPVS_KEYS
        }
        return IpvsTimeouts(**{k: v for k, v in values.items() if v is not None})

    def defaults(self, table: _Table) -> None:
        table.allow(DEFAULTS_KEYS, "[defaults]")
        self.service_defaults = self._service_level(table, DEFAULTS_KEYS[:-1])
        check = table.table("check")
        if check is not None:
            check.allow(CHECK_TIMING_KEYS, "[defaults.check]")
            self.check_defaults = self._timing(check)
            self._timeout_below_interval(check, self.check_defaults)

    def _service_level(self, table: _Table, keys: Iterable[str]) -> dict[str, Any]:
        converters: dict[str, Callable[[object], Any]] = {
            "scheduler": lambda v: to_enum(v, Scheduler, "scheduler"),
            "forward": lambda v: to_enum(v, Forward, "forwarding method"),
            "on_failure": lambda v: to_enum(v, FailureAction, "on_failure action"),
            "initial_state": lambda v: to_enum(v, InitialState, "initial state"),
            "slow_start": lambda v: to_float(v, 0.0),
        }
        values = {key: table.get(key, converters[key]) for key in keys}
        return {key: value for key, value in values.items() if value is not None}

    # -- services

    def services(self, table: _Table) -> tuple[VirtualServiceConfig, ...]:
        result = []
        seen: dict[ServiceKey, str] = {}
        for name in table.data:
            service = table.table(name)
            if service is None:
                continue
            built = self.service(name, service)
            if built is None:
                continue
            first = seen.setdefault(built.key, name)
            if first != name:
                where = "fwmark" if built.key.fwmark else "address"
                self.error(
                    service.at(where), f"{built.key} is already the key of service {show(first)}"
                )
            result.append(built)
        return tuple(result)

    def service(self, name: str, table: _Table) -> VirtualServiceConfig | None:
        table.allow(SERVICE_KEYS, f"service {show(name)}")
        key = self.service_key(table)
        own = self._service_level(
            table, ("scheduler", "forward", "on_failure", "initial_state", "slow_start")
        )
        level = self.service_defaults | own
        kwargs: dict[str, Any] = {k: v for k, v in level.items() if k not in ("forward",)}
        scheduler: Scheduler = level.get("scheduler", _defaults(VirtualServiceConfig)["scheduler"])
        flags = table.get("flags", to_str_list)
        scheduler_is_bad = table.has("scheduler") and "scheduler" not in own
        if flags is not None and not scheduler_is_bad:
            kwargs["flags"] = self.flags(table.at("flags"), flags, scheduler)
        persistence = table.get("persistence", lambda v: to_int(v, 0, MAX_U32))
        if persistence is not None:
            kwargs["persistence"] = persistence
        family = key.family if key is not None else None
        max_prefix = 128 if family is Family.INET6 else 32
        netmask = table.get("persistence_netmask", lambda v: to_int(v, 0, max_prefix))
        if netmask is not None:
            kwargs["persistence_netmask"] = netmask
        one_packet = table.get("one_packet", to_bool)
        if one_packet is not None:
            kwargs["one_packet"] = one_packet

        inherited = _Inherited(
            forward=level.get("forward"),
            tunnel=table.get("tunnel", lambda v: to_enum(v, TunnelType, "tunnel type")),
            tunnel_port=table.get("tunnel_port", lambda v: to_int(v, 1, MAX_PORT)),
        )
        self._tunnel_rules(table, inherited.forward, inherited.tunnel, inherited.tunnel_port)

        sorry = table.table("sorry_server")
        if sorry is not None:
            kwargs["sorry_server"] = self.sorry(sorry, key, inherited.forward)
        quorum = table.table("quorum")
        if quorum is not None:
            kwargs["quorum"] = self.quorum(quorum)
        panic = table.table("panic")
        if panic is not None:
            kwargs["panic"] = self.panic(panic)
        notify = table.table("notify")
        if notify is not None:
            kwargs["notify"] = self.notify(notify)

        checks = self.checks(table)
        real_servers = self.real_servers(table, key, inherited, checks or ())
        if key is None:
            return None
        return VirtualServiceConfig(name=name, key=key, real_servers=real_servers, **kwargs)

    def service_key(self, table: _Table) -> ServiceKey | None:
        if table.has("fwmark"):
            for other in ("address", "port", "protocol"):
                if table.has(other):
                    self.error(
                        table.at(other),
                        "a fwmark service takes no address, port or protocol "
                        "(the firewall mark selects the packets)",
                    )
            fwmark = table.get("fwmark", lambda v: to_int(v, 1, MAX_FWMARK))
            family = table.get("family", lambda v: to_enum(v, Family, "family"))
            if fwmark is None:
                return None
            return ServiceKey.mark(fwmark, family or Family.INET)
        if not table.required("address", "a service needs address and port, or fwmark"):
            return None
        address = table.get("address", to_ip)
        port = None
        if table.required("port", "a service with an address needs a port"):
            port = table.get("port", lambda v: to_int(v, 1, MAX_PORT))
        protocol = table.get("protocol", lambda v: to_enum(v, Protocol, "protocol"))
        family = table.get("family", lambda v: to_enum(v, Family, "family"))
        if address is None or port is None:
            return None
        key = ServiceKey.inet(protocol or DEFAULT_PROTOCOL, address, port)
        if family is not None and family is not key.family:
            self.error(table.at("family"), f"family {family} does not match address {address}")
        return key

    def flags(
        self, path: KeyPath, words: tuple[str, ...], scheduler: Scheduler
    ) -> frozenset[SchedFlag]:
        result = set()
        if words and scheduler not in FLAGGED_SCHEDULERS:
            self.error(
                path,
                f"flags apply only to the sh and mh schedulers, not {scheduler}",
            )
            return frozenset()
        own = [f"{scheduler}-{f}" for f in SchedFlag]
        expected = f"expected {' or '.join(own)}"
        for word in words:
            prefix, _, name = word.lower().rpartition("-")
            try:
                flag = SchedFlag(name)
            except ValueError:
                flag = None
            if flag is not None and prefix != scheduler.value and prefix in FLAGGED_SCHEDULERS:
                self.error(
                    path,
                    f"flag {show(word)} is for scheduler {prefix}, not {scheduler}; {expected}",
                )
                continue
            if flag is None or prefix not in ("", scheduler.value):
                self.error(
                    path,
                    f"unknown flag {show(word)} for scheduler {scheduler}"
                    f"{did_you_mean(word.lower(), own)}; {expected}",
                )
                continue
            result.add(flag)
        return frozenset(result)

    def _tunnel_rules(
        self,
        table: _Table,
        forward: Forward | None,
        tunnel: TunnelType | None,
        tunnel_port: int | None,
    ) -> None:
        bad_forward = table.has("forward") and forward is None  # reported already
        if tunnel is not None and forward is not Forward.TUN and not bad_forward:
            effective = forward or _defaults(RealServer)["forward"]
            self.error(
                table.at("tunnel"),
                f'tunnel "{tunnel}" applies only with forward = "tun", not "{effective}"',
            )
        if tunnel is TunnelType.GUE and tunnel_port is None and not table.has("tunnel_port"):
            self.error(table.at("tunnel"), 'tunnel "gue" needs tunnel_port (the UDP port)')

    def sorry(
        self, table: _Table, key: ServiceKey | None, forward: Forward | None
    ) -> SorryServer | None:
        table.allow(SORRY_KEYS, "sorry_server")
        if not table.required("address", "the sorry server's address"):
            return None
        address = table.get("address", to_ip)
        port = self._dest_port(table, key)
        weight = table.get("weight", lambda v: to_int(v, 0, MAX_WEIGHT))
        own = table.get("forward", lambda v: to_enum(v, Forward, "forwarding method"))
        kwargs: dict[str, Any] = {}
        if weight is not None:
            kwargs["weight"] = weight
        if (own or forward) is not None:
            kwargs["forward"] = own or forward
        if address is None or port is None:
            return None
        self._family_rule(table, key, address, kwargs.get("forward"))
        return SorryServer(address=address, port=port, **kwargs)

    def quorum(self, table: _Table) -> Quorum:
        table.allow(QUORUM_KEYS, "quorum")
        kwargs = {
            "minimum": table.get("minimum", lambda v: to_int(v, 0, None)),
            "hysteresis": table.get("hysteresis", lambda v: to_int(v, 0, None)),
            "up_command": table.get("up_command", to_command),
            "down_command": table.get("down_command", to_command),
        }
        return Quorum(**{k: v for k, v in kwargs.items() if v is not None})

    def notify(self, table: _Table) -> Notify:
        """A service's or real server's ``notify`` table (its up/down commands)."""
        table.allow(NOTIFY_KEYS, "notify")
        kwargs = {
            "up": table.get("up", to_command),
            "down": table.get("down", to_command),
            "user": table.get("user", to_str),
            "group": table.get("group", to_str),
            "timeout": table.get("timeout", lambda v: to_float(v, 0.0, strict=True)),
            "on_stop": table.get("on_stop", to_bool),
        }
        if not table.has("up") and not table.has("down"):
            self.error(table.path, 'notify needs "up" or "down" (the command to run)')
        return Notify(**{k: v for k, v in kwargs.items() if v is not None})

    def panic(self, table: _Table) -> PanicGuard:
        table.allow(PANIC_KEYS, "panic")
        kwargs = {
            "threshold": table.get("threshold", lambda v: to_float(v, 0.0, strict=True, high=1.0)),
            "min_servers": table.get("min_servers", lambda v: to_int(v, 1, None)),
        }
        return PanicGuard(**{k: v for k, v in kwargs.items() if v is not None})

    # -- real servers

    def _dest_port(self, table: _Table, key: ServiceKey | None) -> int | None:
        if not table.has("port"):
            return key.port if key is not None else None
        port: int | None = table.get("port", lambda v: to_int(v, 0, MAX_PORT))
        if port == 0 and key is not None and not key.fwmark:
            self.error(table.at("port"), "port 0 is allowed only for fwmark services")
            return None
        return port

    def _family_rule(
        self,
        table: _Table,
        key: ServiceKey | None,
        address: IPAddress,
        forward: Forward | None,
    ) -> None:
        effective = forward or _defaults(RealServer)["forward"]
        if key is None or effective is not Forward.NAT:
            return
        want = 6 if key.family is Family.INET6 else 4
        if address.version != want:
            self.error(
                table.at("address"),
                f"IPv{address.version} address {address} on an IPv{want} service: "
                "NAT needs the real server in the service's address family",
            )

    def real_servers(
        self,
        table: _Table,
        key: ServiceKey | None,
        inherited: _Inherited,
        service_checks: tuple[CheckSpec, ...],
    ) -> tuple[RealServer, ...]:
        """The service's real servers, each (address, port) once."""
        result = []
        seen: dict[DestKey, int] = {}
        for index, server in enumerate(table.tables("real_servers") or []):
            built = self.real_server(server, key, inherited, service_checks)
            if built is None:
                continue
            first = seen.setdefault(built.key, index)
            if first != index:
                self.error(
                    server.at("address"),
                    f"real server {built.key} is already listed as real_servers[{first}]",
                )
            result.append(built)
        return tuple(result)

    def real_server(
        self,
        table: _Table,
        key: ServiceKey | None,
        inherited: _Inherited,
        service_checks: tuple[CheckSpec, ...],
    ) -> RealServer | None:
        table.allow(REAL_SERVER_KEYS, "a real server")
        if not table.required("address", "the real server's address"):
            return None
        address = table.get("address", to_ip)
        port = self._dest_port(table, key)
        kwargs: dict[str, Any] = {}
        weight = table.get("weight", lambda v: to_int(v, 0, MAX_WEIGHT))
        if weight is not None:
            kwargs["weight"] = weight
        forward = table.get("forward", lambda v: to_enum(v, Forward, "forwarding method"))
        forward = forward or inherited.forward
        if forward is not None:
            kwargs["forward"] = forward
        tunnel = table.get("tunnel", lambda v: to_enum(v, TunnelType, "tunnel type"))
        tunnel_port = table.get("tunnel_port", lambda v: to_int(v, 1, MAX_PORT))
        if table.has("tunnel"):
            self._tunnel_rules(table, forward, tunnel, tunnel_port or inherited.tunnel_port)
        elif forward is Forward.TUN:
            tunnel = inherited.tunnel
        if tunnel is not None and forward is Forward.TUN:
            kwargs["tunnel"] = tunnel
            port_value = tunnel_port or inherited.tunnel_port
            if port_value is not None:
                kwargs["tunnel_port"] = port_value
        kwargs.update(self._thresholds(table))
        notify = table.table("notify")
        if notify is not None:
            kwargs["notify"] = self.notify(notify)
        own_checks = self.checks(table)
        checks = own_checks if own_checks is not None else service_checks
        if address is not None:
            self._family_rule(table, key, address, forward)
        if address is None or port is None:
            return None
        if port == 0:
            for check in checks:
                if check.port is None and check.kind != "icmp":  # a ping has no port
                    self.error(
                        table.at("port"),
                        f"real server port is 0, so its {check.kind} check needs its own port",
                    )
                    break
        return RealServer(address=address, port=port, checks=checks, **kwargs)

    def _thresholds(self, table: _Table) -> dict[str, int]:
        """A real server's connection thresholds, the lower one not above the upper."""
        kwargs = {}
        upper = table.get("upper_threshold", lambda v: to_int(v, 0, MAX_U32))
        lower = table.get("lower_threshold", lambda v: to_int(v, 0, MAX_U32))
        if upper is not None:
            kwargs["upper_threshold"] = upper
        if lower is not None:
            kwargs["lower_threshold"] = lower
        if upper and lower is not None and lower > upper:
            self.error(
                table.at("lower_threshold"),
                f"lower_threshold {lower} is above upper_threshold {upper}",
            )
        return kwargs

    # -- checks

    def checks(self, table: _Table) -> tuple[CheckSpec, ...] | None:
        """The checks of a service or real server (None: none given here)."""
        if table.has("check") and table.has("checks"):
            self.error(table.at("check"), "give either check (one) or checks (a list), not both")
            return None
        if table.has("check"):
            single = table.table("check")
            return tuple(c for c in [self.check(single)] if c is not None) if single else ()
        many = table.tables("checks")
        if many is None:
            return None
        return tuple(c for c in (self.check(t) for t in many) if c is not None)

    def _timing(self, table: _Table) -> dict[str, Any]:
        converters: dict[str, Callable[[object], Any]] = {
            "interval": lambda v: to_float(v, MIN_INTERVAL),
            "timeout": lambda v: to_float(v, 0.0, strict=True),
            "rise": lambda v: to_int(v, 1, None),
            "fall": lambda v: to_int(v, 1, None),
        }
        values = {key: table.get(key, converters[key]) for key in CHECK_TIMING_KEYS}
        return {key: value for key, value in values.items() if value is not None}

    def _timeout_below_interval(self, table: _Table, timing: dict[str, Any]) -> None:
        if not (table.has("timeout") or table.has("interval")):
            return
        effective = {**_defaults(CheckSpec), **self.check_defaults, **timing}
        if effective["timeout"] >= effective["interval"]:
            where = "timeout" if table.has("timeout") else "interval"
            self.error(
                table.at(where),
                f"timeout {effective['timeout']:g} must be less than "
                f"interval {effective['interval']:g}",
            )

    def check(self, table: _Table) -> CheckSpec | None:
        if not table.required("kind", f"one of {', '.join(CHECK_KINDS)}"):
            return None
        kind = table.get("kind", to_str)
        if kind is None:
            return None
        kind = kind.strip().lower()
        if kind not in CHECK_KINDS:
            self.error(
                table.at("kind"),
                f"unknown check kind {show(kind)}{did_you_mean(kind, CHECK_KINDS)}; "
                f"expected one of {', '.join(CHECK_KINDS)}",
            )
            return None
        options_type = CHECK_KINDS[kind]
        option_names = _option_names(options_type)
        for key in table.data:
            if key in CHECK_COMMON_KEYS or key in option_names:
                continue
            choices = [*CHECK_COMMON_KEYS, *option_names]
            takes = ", ".join(option_names) or "no options"
            self.error(
                table.at(key),
                f"option {show(key)} does not belong to check kind {show(kind)}"
                f"{did_you_mean(key, choices)}; {kind} takes: {takes}",
            )
        timing = self._timing(table)
        self._timeout_below_interval(table, timing)
        kwargs: dict[str, Any] = self.check_defaults | timing
        port = table.get("port", lambda v: to_int(v, 1, MAX_PORT))
        if port is not None:
            kwargs["port"] = port
        source = table.get("source", to_ip)
        if source is not None:
            kwargs["source"] = str(source)
        source_port = table.get("source_port", lambda v: to_int(v, 1, MAX_PORT))
        if source_port is not None:
            kwargs["source_port"] = source_port
        portless_agent = kind == "agent" and not table.has("port")
        if portless_agent:
            self.error(
                table.path,
                'check kind "agent" needs "port" (the port its agent listens on, '
                "not the service's)",
            )
        options = self.options(table, kind, options_type, option_names)
        if options is None or portless_agent:
            return None
        return CheckSpec(kind=kind, options=options, **kwargs)

    def options(
        self, table: _Table, kind: str, cls: type[CheckOptions], names: tuple[str, ...]
    ) -> CheckOptions | None:
        hints = _hints(cls)
        defaults = _defaults(cls)
        kwargs: dict[str, Any] = {}
        ok = True
        for name in names:
            if name not in table.data:
                if name not in defaults:
                    self.error(table.path, f"check kind {show(kind)} needs option {show(name)}")
                    ok = False
                continue
            value = table.get(name, by_type(hints[name], name))
            if value is None:
                ok = False
            else:
                kwargs[name] = value
        if "tls" in defaults:
            kwargs["tls"] = kind == "https"
        if not ok:
            return None
        options = cls(**kwargs)
        return options if self._option_rules(table, options) else None

    def _option_rules(self, table: _Table, options: CheckOptions) -> bool:
        """The rules beyond each option's type (DNS answers parse for the DNS type, HTTP
        text fits on the wire); True when ``options`` pass them."""
        found: list[OptionProblem] = []
        if isinstance(options, DnsOptions):
            found = dns_option_problems(options)
        elif isinstance(options, HttpOptions):
            found = http_option_problems(options)
        elif isinstance(options, RadiusOptions) and not options.secret:
            found = [OptionProblem("secret", "", "empty secret", "the shared secret")]
        elif isinstance(options, MysqlOptions):
            found = mysql_option_problems(options)
        for problem in found:
            where = table.at(problem.field)
            if problem.index is not None and isinstance(table.data.get(problem.field), list):
                where = (*where, problem.index)
            reason = f" ({problem.reason})" if problem.reason else ""
            hint = did_you_mean(problem.value.upper(), problem.choices)
            self.error(
                where,
                f"{problem.what} {show(problem.value)}{reason}{hint}; expected {problem.expected}",
            )
        return not found


def build(tree: Tree, path: str, locate: Locate) -> tuple[Config | None, list[Problem]]:
    """Validate ``tree`` and build the config named ``path``: (config, []) or
    (None, every problem)."""
    builder = _Builder(locate)
    config = builder.config(tree, path)
    if builder.problems:
        return None, builder.problems
    return config, []
