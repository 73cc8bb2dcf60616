"""ldirectord.cf conversion: globals, virtual blocks, real lines, checks, the example."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsd.config.model import FailureAction
from lvsd.errors import ImportConfigError
from lvsd.importer import convert
from lvsd.model import Family, Forward
from tests.importer.helpers import FIXTURES, LDIRECTORD_EXAMPLE, converted, keywords, loads_back


def test_full_fixture_https_service(tmp_path: Path) -> None:
    """Globals inherit, ranges expand, per-real request/receive and thresholds map."""
    result, tree = converted("ldirectord", FIXTURES / "full.cf")
    web = tree["services"]["tcp_192_0_2_20_443"]
    assert (
        web["scheduler"], web["persistence"], web["persistence_netmask"], web["on_failure"]
    ) == ("wlc", 300, 24, "quiesce")  # fmt: skip
    assert web["sorry_server"] == {"address": "192.0.2.99", "port": 80, "forward": "nat"}
    servers = web["real_servers"]
    addresses = [(s["address"], s["port"], s["weight"], s["forward"]) for s in servers]
    expected = [
        ("198.51.100.10", 8443, 5, "nat"),
        ("198.51.100.11", 8443, 5, "nat"),
        ("198.51.100.12", 8443, 5, "nat"),
        ("198.51.100.20", 8443, 2, "tun"),
    ]
    assert expected == addresses
    check = servers[0]["checks"][0]
    expected_check = {
        "kind": "https",
        "path": "/health",
        "method": "HEAD",
        "status": ["200-299"],
        "body_regex": "up",
        "host": "www.example.com",
        "verify": False,
        "interval": 5.0,
        "timeout": 2.0,
        "rise": 1,
        "fall": 3,
    }
    assert expected_check == check
    special = servers[3]
    assert (
        special["tunnel"],
        special["lower_threshold"],
        special["upper_threshold"],
        special["checks"][0]["path"],
        special["checks"][0]["body_regex"],
    ) == ("ipip", 10, 100, "/alive", "OK")
    config = loads_back(result, tmp_path)
    assert config.services[0].on_failure == FailureAction.QUIESCE


def test_full_fixture_other_services(tmp_path: Path) -> None:
    """IPv6 smtp, connect check on mysql, fwmark with checkport; emailalert listed."""
    result, tree = converted("ldirectord", FIXTURES / "full.cf")
    services = tree["services"]
    smtp = services["tcp_2001_db8_1_25"]
    assert (smtp["address"], smtp["real_servers"][0]["address"]) == ("2001:db8::1", "2001:db8::10")
    smtp_check = smtp["real_servers"][0]["checks"][0]
    assert (smtp_check["kind"], smtp_check["timeout"], smtp_check["interval"]) == ("smtp", 3.0, 5.0)
    mysql_check = services["tcp_192_0_2_30_3306"]["real_servers"][0]["checks"][0]
    assert (mysql_check["kind"], mysql_check["timeout"]) == ("tcp", 2.0)
    mark = services["fwmark_7"]
    mark_server = mark["real_servers"][0]
    expected_mark = (7, "dr", 80)
    assert expected_mark == (
        mark["fwmark"],
        mark_server["forward"],
        mark_server["checks"][0]["port"],
    )
    assert keywords(result) == [(4, "emailalert")]
    config = loads_back(result, tmp_path)
    assert config.services[1].key.family == Family.INET6
    assert config.services[3].real_servers[0].forward == Forward.DR


def _cf(tmp_path: Path, text: str) -> str:
    path = tmp_path / "ldirectord.cf"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_defaults_are_ldirectords_code_defaults(tmp_path: Path) -> None:
    """No settings: wrr, quiescent no (remove), checkinterval 10, negotiatetimeout 30
    (so interval 40), failurecount 1, service from the port (http)."""
    result, tree = converted(
        "ldirectord", _cf(tmp_path, "virtual=10.0.0.1:80\n\treal=10.0.1.1:80 masq\n")
    )
    service = tree["services"]["tcp_10_0_0_1_80"]
    check = service["real_servers"][0]["checks"][0]
    assert (
        service["scheduler"], service["on_failure"], service["initial_state"]
    ) == ("wrr", "remove", "down")  # fmt: skip
    assert (
        check["kind"], check["interval"], check["timeout"], check["rise"], check["fall"]
    ) == ("http", 40.0, 30.0, 1, 1)  # fmt: skip
    assert result.complete
    loads_back(result, tmp_path)


@pytest.mark.parametrize(
    ("settings", "expected_kind", "unconverted"),
    [
        ("\tservice=ldap\n", "ldap", []),
        ("\tservice=ldaps\n", "tcp", ["service=ldaps"]),
        ("\tservice=imap\n\tlogin=u\n\tpasswd=p\n", "imap", []),
        ("\tservice=pop\n", "pop3", []),
        ("\tservice=ftp\n", "ftp", []),
        ('\tservice=mysql\n\tdatabase=d\n\trequest="SELECT 1"\n', "mysql", []),
        ("\tservice=pgsql\n", "pgsql", []),
        ("\tservice=sip\n\tprotocol=udp\n", "sip", []),
        ('\tservice=radius\n\tprotocol=udp\n\tsecret="s3"\n', "radius", []),
        ("\tservice=radius\n\tprotocol=udp\n", "tcp", ["service=radius"]),
        ("\tchecktype=ping\n", "icmp", []),
        ("\tchecktype=connect\n\tprotocol=udp\n", "icmp", []),
        ("\tchecktype=on\n", None, []),
        ("\tservice=none\n", None, []),
        ("\tchecktype=external\n\tcheckcommand=/bin/chk\n", "exec", []),
        ('\tservice=simpletcp\n\trequest="PING"\n\treceive="PONG"\n', "tcp", []),
        ('\tservice=dns\n\trequest="example.com"\n\treceive="192.0.2.1"\n', "dns", []),
    ],
)
def test_checktypes_and_services(
    tmp_path: Path, settings: str, expected_kind: str | None, unconverted: list[str]
) -> None:
    """Each checktype/service maps to a probe kind, nothing, or an unconverted entry."""
    path = _cf(tmp_path, f"virtual=10.0.0.1:8000\n\treal=10.0.1.1:8000 gate\n{settings}")
    result, tree = converted("ldirectord", path)
    (service,) = tree["services"].values()
    checks = service["real_servers"][0].get("checks", [])
    assert expected_kind == (checks[0]["kind"] if checks else None)
    assert unconverted == [u.keyword for u in result.unconverted]
    loads_back(result, tmp_path)


def test_mysql_login_without_password_becomes_user(tmp_path: Path) -> None:
    """A password-less login of a mysql check is the user the probe logs in as; with a
    password it is not used (lvsd logs in with an empty password only)."""
    base = "virtual=10.0.0.1:3306\n\treal=10.0.1.1:3306 gate\n\tservice=mysql\n"
    for extra, user in (("\tlogin=probe\n", "probe"), ("\tlogin=probe\n\tpasswd=x\n", None)):
        result, tree = converted("ldirectord", _cf(tmp_path, base + extra))
        (service,) = tree["services"].values()
        (check,) = service["real_servers"][0]["checks"]
        assert ("mysql", user) == (check["kind"], check.get("user"))
        loads_back(result, tmp_path)


def test_checktype_off_means_weight_zero(tmp_path: Path) -> None:
    """checktype=off keeps the real server out of the pool: weight 0, no check."""
    path = _cf(tmp_path, "virtual=10.0.0.1:80\n\treal=10.0.1.1:80 gate 5\n\tchecktype=off\n")
    _, tree = converted("ldirectord", path)
    server = tree["services"]["tcp_10_0_0_1_80"]["real_servers"][0]
    assert (server["weight"], server.get("checks")) == (0, None)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("virtual=10.0.0.1:80\n\treal=10.0.1.1:80 bogus\n", 2, "gate|masq|ipip"),
        ("virtual=www.example.com:80\n", 1, "not an IP address"),
        ("\treal=10.0.1.1:80 gate\n", 1, "outside a virtual block"),
        ("virtual=10.0.0.1:80\n\treal=10.0.1.9->10.0.1.1:80 gate\n", 2, "ends before"),
        ("justaword\n", 1, "expected key=value"),
        ("virtual=10.0.0.1:80\n\tchecktype=sometimes\n\treal=10.0.1.1:80 gate\n", 2, "checktype"),
        ("checktimeout=abc\nvirtual=10.0.0.1:80\n\treal=10.0.1.1:80 gate\n\tchecktype=connect\n",
         1, "checktimeout: expected a number of seconds > 0, got 'abc'"),
        ("checkinterval=ten\nvirtual=10.0.0.1:80\n\treal=10.0.1.1:80 gate\n", 1,
         "checkinterval: expected a number of seconds > 0, got 'ten'"),
        ("virtual=10.0.0.1:80\n\treal=10.0.1.1:80 gate\n\tnegotiatetimeout=inf\n", 3,
         "negotiatetimeout: expected a number of seconds > 0, got 'inf'"),
        ("virtual=10.0.0.1:80\n\treal=10.0.1.1:80 gate\n\tfailurecount=x\n", 3,
         "failurecount: expected an integer >= 1, got 'x'"),
        ("virtual=10.0.0.1:80\n\treal=10.0.1.1:80 gate\n\tcheckport=http\n", 3,
         "checkport: expected an integer 1..65535, got 'http'"),
        ("virtual=10.0.0.1:80\n\tpersistent=abc\n\treal=10.0.1.1:80 gate\n", 2,
         "persistent: expected an integer 0..4294967295, got 'abc'"),
        # a malformed number is an error even where the conversion does not use it
        ("checktimeout=abc\nvirtual=10.0.0.1:80\n\treal=10.0.1.1:80 gate\n\tchecktype=on\n",
         1, "checktimeout: expected a number"),
        ("virtual=10.0.0.1:99999\n", 1, "port 99999 is out of range"),
        ("virtual=10.0.0.1:8\u00b2\n", 1, "unknown port name"),
    ],
)  # fmt: skip
def test_malformed_input(tmp_path: Path, text: str, line: int, message: str) -> None:
    """Malformed input is an ImportConfigError with file and line."""
    path = _cf(tmp_path, text)
    with pytest.raises(ImportConfigError, match=rf"ldirectord.cf:{line}: .*{message}"):
        convert("ldirectord", path)


@pytest.mark.skipif(
    not LDIRECTORD_EXAMPLE.is_file(),
    reason=f"{LDIRECTORD_EXAMPLE} is absent (apt-get install ldirectord)",
)
def test_debian_example_converts_and_loads(tmp_path: Path) -> None:
    """ldirectord's shipped example converts completely and loads."""
    result = convert("ldirectord", str(LDIRECTORD_EXAMPLE))
    assert keywords(result) == []
    config = loads_back(result, tmp_path)
    assert (config.services[0].name, config.real_server_count, config.check_count) == (
        "web_site",
        3,
        3,
    )


@pytest.mark.skipif(
    not LDIRECTORD_EXAMPLE.is_file(),
    reason=f"{LDIRECTORD_EXAMPLE} is absent (apt-get install ldirectord)",
)
def test_debian_example_commented_services_convert(tmp_path: Path) -> None:
    """The example's commented-out services, uncommented, convert and load; the
    unsupported services (nntp, oracle) are listed."""
    lines = []
    for raw in LDIRECTORD_EXAMPLE.read_text().splitlines():
        if raw.startswith("#virtual") or (raw.startswith("#\t") and not raw.startswith("#\t#")):
            raw = raw[1:]
        lines.append(raw)
    text = "\n".join(lines)
    text = text.replace("sql01->sql03", "10.0.2.1->10.0.2.3").replace("::5060", ":5060")
    # the range sample reuses the first sample's virtual address: give it its own
    text = text.replace(
        "virtual=192.168.6.240:80\n\treal=192.168.6.2->",
        "virtual=192.168.6.241:80\n\treal=192.168.6.2->",
    )
    result = convert("ldirectord", _cf(tmp_path, text))
    listed = sorted({u.keyword for u in result.unconverted})
    expected = ["service=nntp", "service=oracle"]
    assert expected == listed
    loads_back(result, tmp_path)


def test_external_check_uses_checktimeout(tmp_path: Path) -> None:
    """ldirectord runs checkcommand under checktimeout (system_timeout), not
    negotiatetimeout."""
    path = _cf(
        tmp_path,
        "checktimeout=4\nnegotiatetimeout=20\nvirtual=10.0.0.1:8000\n"
        "\treal=10.0.1.1:8000 gate\n\tchecktype=external\n\tcheckcommand=/bin/chk\n",
    )
    _, tree = converted("ldirectord", path)
    check = tree["services"]["tcp_10_0_0_1_8000"]["real_servers"][0]["checks"][0]
    assert (10.0, 4.0) == (check["interval"], check["timeout"])


@pytest.mark.parametrize(("fork", "expected"), [("", 10.0), ("fork=yes\n", 3.0)])
def test_virtual_checkinterval_needs_fork(tmp_path: Path, fork: str, expected: float) -> None:
    """A checkinterval inside a virtual counts only with fork=yes (ldirectord warns
    and uses the global one otherwise)."""
    path = _cf(
        tmp_path,
        f"{fork}checktimeout=2\nvirtual=10.0.0.1:8000\n\treal=10.0.1.1:8000 gate\n"
        "\tchecktype=connect\n\tcheckinterval=3\n",
    )
    _, tree = converted("ldirectord", path)
    check = tree["services"]["tcp_10_0_0_1_8000"]["real_servers"][0]["checks"][0]
    assert expected == check["interval"]


def test_masq_real_server_without_port_gets_a_comment(tmp_path: Path) -> None:
    """ldirectord gives the kernel port 0 for a masq real server without a port (the
    lab shows 10.9.1.2:0 Masq); lvsd uses the service's port and says so."""
    path = _cf(tmp_path, "virtual=10.0.0.1:80\n\treal=10.0.1.1 masq\n\tchecktype=on\n")
    result, tree = converted("ldirectord", path)
    assert "port" not in tree["services"]["tcp_10_0_0_1_80"]["real_servers"][0]
    real = next(t for t in result.document.tables if t.path[-1:] == ("real_servers",))
    assert any("port 0" in c for c in real.comments)
    assert 80 == loads_back(result, tmp_path).services[0].real_servers[0].port


def test_fwmark_check_skipped_for_one_server_keeps_the_others(tmp_path: Path) -> None:
    """A fwmark real server whose check has no port loses only its own check, not an
    earlier server's equal one."""
    text = "virtual=7\n\tchecktype=connect\n\treal=10.0.1.1:80 masq\n\treal=10.0.1.2 masq\n"
    _, tree = converted("ldirectord", _cf(tmp_path, text))
    servers = next(iter(tree["services"].values()))["real_servers"]
    assert [("checks" in s) for s in servers] == [True, False]
