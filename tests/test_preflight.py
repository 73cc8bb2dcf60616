"""Tests of the host preflight against fake /proc and /lib/modules trees in tmp_path."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from lvsd.config.model import (
    CheckSpec,
    Config,
    IcmpOptions,
    RealServer,
    SorryServer,
    VirtualServiceConfig,
)
from lvsd.model import Forward, Protocol, Scheduler, ServiceKey
from lvsd.preflight import Finding, Severity, audit, format_findings, kernel_version, worst

RELEASE = "6.1.0-18-amd64"


def service(
    name: str = "web",
    vip: str = "192.168.3.108",
    forward: Forward = Forward.NAT,
    scheduler: Scheduler = Scheduler.WRR,
    persistence: int = 0,
    sorry: SorryServer | None = None,
) -> VirtualServiceConfig:
    rip = "10.0.0.2" if ":" not in vip else "2001:db8::2"
    return VirtualServiceConfig(
        name=name,
        key=ServiceKey.inet(Protocol.TCP, vip, 80),
        scheduler=scheduler,
        persistence=persistence,
        sorry_server=sorry,
        real_servers=(RealServer(address=ipaddress.ip_address(rip), port=80, forward=forward),),
    )


def config(*services: VirtualServiceConfig) -> Config:
    return Config(path="lvsd.toml", services=services)


class Host:
    """A fake host: files under tmp_path/proc and tmp_path/modules."""

    def __init__(self, root: Path, release: str = RELEASE) -> None:
        self.proc = root / "proc"
        self.modules = root / "modules"
        self.release = release
        self.write("sys/kernel/osrelease", release + "\n")

    def write(self, relative: str, text: str) -> None:
        path = self.proc / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def ipvs_loaded(self, **sysctls: int) -> Host:
        self.write("net/ip_vs", "IP Virtual Server version 1.2.1 (size=4096)\n")
        values = {
            "expire_nodest_conn": 1,
            "expire_quiescent_template": 1,
            "conn_reuse_mode": 1,
            "conntrack": 0,
            **sysctls,
        }
        for name, value in values.items():
            self.write(f"sys/net/ipv4/vs/{name}", f"{value}\n")
        return self

    def loaded_modules(self, *names: str) -> Host:
        self.write("modules", "".join(f"{n} 172032 0 - Live 0x0000000000000000\n" for n in names))
        return self

    def module_files(self, *names: str) -> Host:
        ipvs = self.modules / self.release / "kernel/net/netfilter/ipvs"
        ipvs.mkdir(parents=True, exist_ok=True)
        for name in names:
            (ipvs / f"{name}.ko.xz").write_bytes(b"")
        return self

    def audit(self, cfg: Config) -> dict[str, Finding]:
        return {f.setting: f for f in audit(cfg, proc=self.proc, modules_dir=self.modules)}


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def test_healthy_host_is_all_ok(host: Host) -> None:
    """A tuned host with NAT on and the modules loaded gives only OK findings."""
    host.ipvs_loaded().loaded_modules("ip_vs", "ip_vs_wrr", "nf_conntrack")
    host.write("sys/net/ipv4/ip_forward", "1\n")

    findings = audit(config(service(persistence=300)), proc=host.proc, modules_dir=host.modules)

    assert Severity.OK == worst(findings)
    assert [
        "module ip_vs",
        "module ip_vs_wrr",
        "net.ipv4.ip_forward",
        "net.ipv4.vs.expire_nodest_conn",
        "net.ipv4.vs.expire_quiescent_template",
        "net.ipv4.vs.conn_reuse_mode",
    ] == [f.setting for f in findings]


def test_ip_forward_off_is_an_error_for_nat(host: Host) -> None:
    """NAT without forwarding cannot work: an error with the sysctl to fix it."""
    host.ipvs_loaded().loaded_modules("ip_vs_wrr")
    host.write("sys/net/ipv4/ip_forward", "0\n")

    finding = host.audit(config(service()))["net.ipv4.ip_forward"]

    assert (Severity.ERROR, "0") == (finding.severity, finding.value)
    assert "sysctl -w net.ipv4.ip_forward=1" in finding.fix


def test_sorry_server_nat_also_needs_forwarding(host: Host) -> None:
    """A DR service whose sorry server is NAT still needs ip_forward."""
    host.ipvs_loaded().loaded_modules("ip_vs_wrr")
    host.write("sys/net/ipv4/ip_forward", "0\n")
    sorry = SorryServer(address=ipaddress.ip_address("10.0.0.9"), port=80, forward=Forward.NAT)

    findings = host.audit(config(service(forward=Forward.DR, sorry=sorry)))

    assert Severity.ERROR == findings["net.ipv4.ip_forward"].severity


def test_ip_forward_not_checked_without_nat(host: Host) -> None:
    """DR-only configs do not need forwarding, so it is not reported."""
    host.ipvs_loaded().loaded_modules("ip_vs_wrr")
    host.write("sys/net/ipv4/ip_forward", "0\n")

    findings = host.audit(config(service(forward=Forward.DR)))

    assert "net.ipv4.ip_forward" not in findings


def test_ipv6_nat_checks_ipv6_forwarding(host: Host) -> None:
    """An IPv6 NAT service checks net.ipv6.conf.all.forwarding, not ip_forward."""
    host.ipvs_loaded().loaded_modules("ip_vs_wrr")
    host.write("sys/net/ipv6/conf/all/forwarding", "0\n")

    findings = host.audit(config(service(vip="2001:db8::80")))

    assert Severity.ERROR == findings["net.ipv6.conf.all.forwarding"].severity
    assert "net.ipv4.ip_forward" not in findings


def test_unreadable_forwarding_is_a_warning(host: Host) -> None:
    """A missing sysctl file is reported as unreadable, not guessed."""
    host.ipvs_loaded().loaded_modules("ip_vs_wrr")

    finding = host.audit(config(service()))["net.ipv4.ip_forward"]

    assert (Severity.WARN, None) == (finding.severity, finding.value)


def test_expire_nodest_conn_off_warns(host: Host) -> None:
    """expire_nodest_conn=0 leaves clients of removed servers hanging."""
    host.ipvs_loaded(expire_nodest_conn=0).loaded_modules("ip_vs_wrr")

    finding = host.audit(config(service(forward=Forward.DR)))["net.ipv4.vs.expire_nodest_conn"]

    assert Severity.WARN == finding.severity
    assert "hang" in finding.consequence
    assert "net.ipv4.vs.expire_nodest_conn=1" in finding.fix


def test_quiescent_template_only_for_persistent_services(host: Host) -> None:
    """expire_quiescent_template matters (and is reported) only with persistence."""
    host.ipvs_loaded(expire_quiescent_template=0).loaded_modules("ip_vs_wrr")
    setting = "net.ipv4.vs.expire_quiescent_template"

    plain = host.audit(config(service(forward=Forward.DR)))
    sticky = host.audit(config(service(forward=Forward.DR, persistence=300)))

    assert setting not in plain
    assert Severity.WARN == sticky[setting].severity


@pytest.mark.parametrize(
    ("release", "mode", "conntrack", "expected", "text"),
    [
        ("5.4.0-150-generic", 1, 1, Severity.WARN, "1-second"),
        ("5.4.0-150-generic", 1, 0, Severity.OK, "without stalls"),
        ("5.4.0-150-generic", 0, 1, Severity.WARN, "drained"),
        ("5.9.0", 1, 1, Severity.OK, "without stalls"),
        ("6.1.0-18-amd64", 0, 0, Severity.WARN, "drained"),
    ],
)
def test_conn_reuse_mode(
    tmp_path: Path, release: str, mode: int, conntrack: int, expected: Severity, text: str
) -> None:
    """conn_reuse_mode=1 stalls before 5.9 with conntrack; 0 keeps busy clients on old servers."""
    host = Host(tmp_path, release=release)
    host.ipvs_loaded(conn_reuse_mode=mode, conntrack=conntrack).loaded_modules("ip_vs_wrr")

    finding = host.audit(config(service(forward=Forward.DR)))["net.ipv4.vs.conn_reuse_mode"]

    assert expected == finding.severity
    assert text in finding.consequence


def test_ip_vs_not_loaded_but_available(host: Host) -> None:
    """An unloaded but available ip_vs warns, and its sysctls are reported unchecked."""
    host.loaded_modules("nf_conntrack").module_files("ip_vs", "ip_vs_wrr")

    findings = host.audit(config(service(forward=Forward.DR)))

    assert (Severity.WARN, "not loaded") == (
        findings["module ip_vs"].severity,
        findings["module ip_vs"].value,
    )
    assert "modules-load.d" in findings["module ip_vs"].fix
    assert ("available", Severity.OK) == (
        findings["module ip_vs_wrr"].value,
        findings["module ip_vs_wrr"].severity,
    )
    assert Severity.WARN == findings["net.ipv4.vs.*"].severity


def test_no_ipvs_in_kernel_is_an_error(host: Host) -> None:
    """A kernel without IPVS at all is an error."""
    host.loaded_modules("nf_conntrack").module_files("ip_vs_rr")
    (host.modules / RELEASE / "kernel/net/netfilter/ipvs/ip_vs_rr.ko.xz").unlink()

    findings = host.audit(config(service(forward=Forward.DR)))

    assert Severity.ERROR == findings["module ip_vs"].severity
    assert Severity.ERROR == worst(findings.values())


def test_missing_scheduler_names_the_services(host: Host) -> None:
    """A scheduler the kernel lacks is an error naming every service using it."""
    host.ipvs_loaded().loaded_modules("ip_vs").module_files("ip_vs", "ip_vs_rr", "ip_vs_wrr")

    findings = host.audit(
        config(
            service("a", scheduler=Scheduler.TWOS, forward=Forward.DR),
            service("b", vip="192.168.3.109", scheduler=Scheduler.TWOS, forward=Forward.DR),
            service("c", vip="192.168.3.110", scheduler=Scheduler.RR, forward=Forward.DR),
        )
    )

    assert Severity.ERROR == findings["module ip_vs_twos"].severity
    assert "a, b" in findings["module ip_vs_twos"].consequence
    assert Severity.OK == findings["module ip_vs_rr"].severity


def test_builtin_scheduler_counts_as_present(host: Host) -> None:
    """Schedulers built into the kernel are listed in modules.builtin."""
    host.ipvs_loaded()
    tree = host.modules / RELEASE
    tree.mkdir(parents=True)
    (tree / "modules.builtin").write_text("kernel/net/netfilter/ipvs/ip_vs_mh.ko\n")

    finding = host.audit(config(service(scheduler=Scheduler.MH, forward=Forward.DR)))[
        "module ip_vs_mh"
    ]

    assert ("builtin", Severity.OK) == (finding.value, finding.severity)


def test_modules_dep_lists_available_modules(host: Host) -> None:
    """modules.dep is enough to know a module can be loaded."""
    host.ipvs_loaded()
    tree = host.modules / RELEASE
    tree.mkdir(parents=True)
    (tree / "modules.dep").write_text(
        "kernel/net/netfilter/ipvs/ip_vs_sh.ko.zst: kernel/net/netfilter/ipvs/ip_vs.ko.zst\n"
    )

    finding = host.audit(config(service(scheduler=Scheduler.SH, forward=Forward.DR)))[
        "module ip_vs_sh"
    ]

    assert "available" == finding.value


def test_nothing_readable_is_unknown_not_missing(host: Host) -> None:
    """Without /proc/modules or a module tree (a container), schedulers are 'unknown'."""
    host.ipvs_loaded()

    finding = host.audit(config(service(forward=Forward.DR)))["module ip_vs_wrr"]

    assert (Severity.WARN, None) == (finding.severity, finding.value)


def test_proc_modules_alone_cannot_say_missing(host: Host) -> None:
    """/proc/modules lists only loaded modules: without the module tree an unloaded
    scheduler may be built in, so it is 'unknown' (a warning), not an error."""
    host.ipvs_loaded().loaded_modules("ip_vs")

    finding = host.audit(config(service(forward=Forward.DR)))["module ip_vs_wrr"]

    assert (Severity.WARN, None) == (finding.severity, finding.value)


def test_module_tree_denied_is_unknown(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module tree the process may not read (systemd's ProtectKernelModules=yes hides
    it from lvsd run) gives warnings, not an exception."""
    host.ipvs_loaded().loaded_modules("ip_vs").module_files("ip_vs_wrr")

    def denied(self: Path) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", denied)
    finding = host.audit(config(service(forward=Forward.DR)))["module ip_vs_wrr"]

    assert (Severity.WARN, None) == (finding.severity, finding.value)


def test_dr_and_tun_notes_point_at_real_servers(host: Host) -> None:
    """DR and TUN configs get notes about real-server settings, as OK findings."""
    host.ipvs_loaded().loaded_modules("ip_vs_wrr")

    findings = host.audit(
        config(
            service("dr", forward=Forward.DR),
            service("tun", vip="192.168.3.109", forward=Forward.TUN),
        )
    )

    arp = findings["net.ipv4.conf.all.arp_ignore/arp_announce (real servers)"]
    assert Severity.OK == arp.severity
    assert "arp_ignore=1 and arp_announce=2" in arp.fix
    assert "tunnel interface and rp_filter (real servers)" in findings


def test_audit_changes_nothing(host: Host) -> None:
    """The audit only reads: every file is unchanged afterwards."""
    host.ipvs_loaded(expire_nodest_conn=0).loaded_modules("ip_vs_wrr")
    host.write("sys/net/ipv4/ip_forward", "0\n")
    before = {p: p.read_bytes() for p in host.proc.rglob("*") if p.is_file()}

    host.audit(config(service(persistence=60)))

    after = {p: p.read_bytes() for p in host.proc.rglob("*") if p.is_file()}
    assert before == after


def test_format_findings_sorts_errors_first_and_counts() -> None:
    """The report lists errors first, shows the fix, and ends with a count line."""
    findings = [
        Finding(severity=Severity.OK, setting="module ip_vs", value="loaded", consequence="ok."),
        Finding(
            severity=Severity.ERROR,
            setting="net.ipv4.ip_forward",
            value="0",
            consequence="NAT breaks.",
            fix="sysctl -w net.ipv4.ip_forward=1",
        ),
        Finding(severity=Severity.WARN, setting="x", value=None, consequence="cannot read it."),
    ]

    assert (
        "error net.ipv4.ip_forward = 0: NAT breaks.\n"
        "      fix: sysctl -w net.ipv4.ip_forward=1\n"
        "warn  x = unreadable: cannot read it.\n"
        "ok    module ip_vs = loaded: ok.\n"
        "1 error(s), 1 warning(s), 1 ok"
    ) == format_findings(findings)


@pytest.mark.parametrize(
    ("release", "expected"),
    [("5.4.0-150-generic", (5, 4)), ("6.18.44-fc", (6, 18)), ("weird", None), (None, None)],
)
def test_kernel_version(release: str | None, expected: tuple[int, int] | None) -> None:
    """The major and minor numbers are read from the release string."""
    assert expected == kernel_version(release)


def test_worst_of_nothing_is_ok() -> None:
    """No findings means nothing is wrong."""
    assert Severity.OK == worst([])


def _icmp_config() -> Config:
    web = service()
    check = CheckSpec(kind="icmp", options=IcmpOptions())
    server = dataclasses.replace(web.real_servers[0], checks=(check,))
    return config(dataclasses.replace(web, real_servers=(server,)))


def _ping_finding(host: Host, cfg: Config, groups: tuple[int, ...]) -> Finding | None:
    found = audit(cfg, proc=host.proc, modules_dir=host.modules, groups=groups)
    return next((f for f in found if f.setting == "net.ipv4.ping_group_range"), None)


def test_ping_group_range_excluding_us_is_an_error(host: Host) -> None:
    """With icmp checks, a ping_group_range that leaves out every group of ours is an
    error with the fix (every group); one that includes a group of ours is ok."""
    host.write("sys/net/ipv4/ping_group_range", "1\t0\n")
    finding = _ping_finding(host, _icmp_config(), (0,))
    assert finding is not None
    assert (Severity.ERROR, "1 0") == (finding.severity, finding.value)
    assert "icmp checks cannot open ping sockets for groups 0" in finding.consequence
    assert finding.fix.startswith('sysctl -w net.ipv4.ping_group_range="0 2147483647"')
    host.write("sys/net/ipv4/ping_group_range", "100\t200\n")
    finding = _ping_finding(host, _icmp_config(), (0, 150))
    assert finding is not None
    assert (Severity.OK, "icmp checks can open ping sockets (group 150).") == (
        finding.severity,
        finding.consequence,
    )


def test_ping_group_range_only_with_icmp_checks(host: Host) -> None:
    """Without icmp checks the setting is not reported; unreadable, it is a warning."""
    host.write("sys/net/ipv4/ping_group_range", "1\t0\n")
    assert _ping_finding(host, config(service()), (0,)) is None
    (host.proc / "sys/net/ipv4/ping_group_range").unlink()
    finding = _ping_finding(host, _icmp_config(), (0,))
    assert finding is not None
    assert (Severity.WARN, None) == (finding.severity, finding.value)
