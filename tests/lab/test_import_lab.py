"""``lvsd import`` proved against the real daemons in the lab (one boot).

For every keepalived sample Debian ships with a ``virtual_server``, for a config of
keepalived's defaults and edge cases, and for ldirectord's example config: keepalived
(or ldirectord) runs in the guest and programs the kernel; ``lvsd apply`` runs with the
config ``lvsd import`` made of the *unmodified* file; the two ``ipvsadm -Ln`` listings
(services, schedulers, flags, persistence, forwarding, weights, thresholds) are equal.

How the old daemons are run (see ``guest_import.py``):

* keepalived: ``keepalived --dont-fork --check`` (health checkers only, no VRRP) with
  its pid files on the guest's /run tmpfs, on a copy of the sample without its
  ``global_defs``, ``vrrp_*`` blocks, checkers and notify/quorum scripts. A real server
  without a checker is up in keepalived, which is what ``lvsd apply`` programs (every
  real server up): the table is the same as with passing checks, and no probe leaves
  for the samples' addresses.
* ldirectord: its example config unchanged, ``ldirectord -d CONF start`` (foreground);
  its real servers 192.168.6.2/.3/.6 are addresses on the guest's loopback with an HTTP
  server answering ``index.html`` with "Test Page", so its negotiate checks pass and it
  adds them (and drops the fallback).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from lab import harness
from lab.harness import Boot, LabResult, Scenario
from lvsd.importer import convert
from lvsd.importer.emit import render
from tests.lab.conftest import Lab

pytestmark = pytest.mark.lab

HERE = Path(__file__).resolve().parent
SAMPLES = Path("/usr/share/doc/keepalived/samples")
LDIRECTORD_EXAMPLE = Path("/usr/share/doc/ldirectord/examples/ldirectord.cf")

#: Blocks and lines left out of the copy keepalived runs (see the module docstring).
STRIP_BLOCKS = re.compile(r"global_defs|vrrp_\w+|\w+_CHECK|HTTP_GET|SSL_GET|static_\w+")
STRIP_LINES = {"quorum_up", "quorum_down", "notify_up", "notify_down", "smtp_alert"}

#: keepalived's defaults and edge cases, beyond what the samples use.
DEFAULTS_CONF = """\
! no protocol, no lb_algo, no lb_kind, bare persistence_timeout, a real server
! without a port; ops on TCP; DR real server on another port; no real server
virtual_server 192.168.50.1 80 {
    persistence_timeout
    real_server 10.9.0.1 80 {
        weight 2
    }
    real_server 10.9.0.2 {
    }
}
virtual_server 192.168.50.2 443 {
    lvs_sched sh
    sh-port
    sh-fallback
    lvs_method DR
    persistence_timeout 600
    persistence_granularity 255.255.255.0
    real_server 10.9.0.3 443 {
        weight 3
        uthreshold 100
        lthreshold 10
    }
    real_server 10.9.0.4 443 {
        lvs_method TUN type gue port 6080
    }
}
virtual_server fwmark 7 {
    lb_algo mh
    mh-port
    lb_kind DR
    real_server 10.9.0.5 80 {
        weight 4
    }
}
virtual_server 2001:db8::50 53 {
    protocol UDP
    lb_algo rr
    ops
    real_server 2001:db8:9::1 53 {
        weight 5
    }
}
virtual_server_group G1 {
    192.168.50.10-12 8080
}
virtual_server group G1 {
    lb_algo lc
    lb_kind NAT
    real_server 10.9.0.6 8080 {
        weight 6
    }
}
virtual_server 192.168.50.4 8443 {
    protocol TCP
    ops
    lb_kind DR
    real_server 10.9.0.8 443 {
        weight 8
    }
    real_server 10.9.0.8 8080 {
        lvs_method NAT
    }
}
virtual_server 192.168.50.5 80 {
    protocol TCP
}
virtual_server 192.168.50.3 25 {
    lb_algo wrr
    inhibit_on_failure
    sorry_server 10.9.0.9 25
    real_server 10.9.0.7 25 {
        weight 7
    }
}
"""


#: ldirectord's defaults and the rest of its table keywords; checktype=on keeps every
#: real server up without a check.
LDIRECTORD_DEFAULTS = """\
checktimeout=3
checkinterval=1
virtual=192.168.60.1:80
\treal=10.9.1.1:80 masq 3
\treal=10.9.1.2 gate
\tchecktype=on
\tpersistent=600
\tnetmask=255.255.255.0
\tscheduler=sh
\tschedflags=sh-fallback,sh-port
virtual=192.168.60.2:53
\treal=10.9.1.3:53 gate
\tchecktype=on
\tops=yes
virtual=7
\treal=10.9.1.4 gate 2
\tchecktype=on
\tpersistent=300
\tscheduler=lc
virtual6=[2001:db8::60]:443
\treal6=[2001:db8:9::2]:443 ipip 5 l:10 u:100
\tchecktype=on
\tscheduler=rr
"""

#: keepalived's sorry server, not comparable with ``lvsd apply`` (which has every real
#: server up): quorum lost, a NAT sorry server without a port, sorry_server_inhibit.
SORRY_CONF = """\
virtual_server 192.168.50.1 80 {
    protocol TCP
    lb_algo rr
    lb_kind NAT
    quorum 2
    sorry_server 10.9.0.9 8080
    real_server 10.9.0.1 80 {
    }
    real_server 10.9.0.2 80 {
        MISC_CHECK {
            misc_path /bin/false
            alpha
        }
    }
}
virtual_server 192.168.50.2 80 {
    protocol TCP
    lb_algo rr
    lb_kind NAT
    sorry_server 10.9.0.9
    real_server 10.9.0.3 80 {
        MISC_CHECK {
            misc_path /bin/false
            alpha
        }
    }
}
virtual_server 192.168.50.3 80 {
    protocol TCP
    lb_algo rr
    lb_kind NAT
    inhibit_on_failure
    sorry_server 10.9.0.9 80
    sorry_server_inhibit
    real_server 10.9.0.4 80 {
        weight 3
    }
}
"""


def keepalived_samples() -> list[Path]:
    """Debian's keepalived samples that define a virtual_server."""
    if not SAMPLES.is_dir():
        return []
    return sorted(p for p in SAMPLES.glob("keepalived.conf.*") if "virtual_server" in p.read_text())


def strip_keepalived(text: str) -> str:
    """``text`` without the blocks and lines of STRIP_BLOCKS / STRIP_LINES."""
    out: list[str] = []
    opened = False
    dropping = False  # inside (or just before the brace of) a dropped block
    depth = 0
    for line in text.splitlines():
        code = re.split(r"[!#]", line, maxsplit=1)[0]
        words = code.split()
        if not dropping and words and STRIP_BLOCKS.fullmatch(words[0]):
            dropping, depth, opened = True, 0, False
        if dropping:
            opened = opened or "{" in code
            depth += code.count("{") - code.count("}")
            if opened and depth <= 0:
                dropping = False
            continue
        if words and words[0] in STRIP_LINES:
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def test_strip_keepalived_drops_checkers_vrrp_and_scripts() -> None:
    """The copy keepalived runs keeps services and real servers, drops the rest."""
    text = """global_defs {
   router_id X
}
vrrp_instance V {
    state MASTER
    virtual_ipaddress {
        1.2.3.4
    }
}
virtual_server 1.1.1.1 80 {
    lb_algo rr   ! comment {
    quorum_up /bin/true
    real_server 2.2.2.2 80 {
        weight 2
        HTTP_GET {
            url {
              path /
            }
        }
        TCP_CHECK
        {
            connect_timeout 3
        }
    }
}
"""
    expected = """virtual_server 1.1.1.1 80 {
    lb_algo rr   ! comment {
    real_server 2.2.2.2 80 {
        weight 2
    }
}
"""
    assert expected == strip_keepalived(text)


def sorted_table(listing: str) -> dict[str, list[str]]:
    """An ``ipvsadm -Ln`` listing as service line -> sorted destination lines
    (the kernel lists services by hash and destinations by insertion order)."""
    table: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in listing.splitlines()[3:]:
        if line.startswith("  ->"):
            assert current is not None, listing
            current.append(" ".join(line.split()))
        else:
            current = table.setdefault(" ".join(line.split()), [])
    return {service: sorted(dests) for service, dests in table.items()}


def prepare(work: Path) -> list[dict[str, Any]]:
    """Write every case's daemon config and imported TOML into ``work/cases``."""
    cases_dir = work / "cases"
    cases_dir.mkdir()
    cases: list[dict[str, Any]] = []
    sources: list[tuple[str, str, Path, str]] = []
    for sample in keepalived_samples():
        name = sample.name.removeprefix("keepalived.conf.").replace(".", "_")
        sources.append((name, "keepalived", sample, strip_keepalived(sample.read_text())))
    defaults = cases_dir / "defaults.keepalived.conf"
    defaults.write_text(DEFAULTS_CONF)
    sources.append(("defaults", "keepalived", defaults, DEFAULTS_CONF))
    if LDIRECTORD_EXAMPLE.exists():
        sources.append(("example", "ldirectord", LDIRECTORD_EXAMPLE, ""))
    ld_defaults = cases_dir / "ldirectord_defaults.source.cf"
    ld_defaults.write_text(LDIRECTORD_DEFAULTS)
    sources.append(("ldirectord_defaults", "ldirectord", ld_defaults, ""))
    for name, kind, source, daemon_text in sources:
        conversion = convert(kind, str(source))
        toml = cases_dir / f"{name}.toml"
        toml.write_text(render(conversion.document))
        if kind == "keepalived":
            conf = cases_dir / f"{name}.keepalived.conf"
            conf.write_text(daemon_text)
        else:
            conf = cases_dir / f"{name}.cf"
            shutil.copyfile(source, conf)
        cases.append(
            {
                "name": name,
                "kind": kind,
                "conf": str(conf),
                "toml": str(toml),
                "cli": not cases,
                "unconverted": [u.keyword for u in conversion.unconverted],
            }
        )
    (work / "cases.json").write_text(json.dumps(cases, indent=1))
    www = work / "www"
    www.mkdir()
    (www / "index.html").write_text("<html><body>Test Page</body></html>\n")
    (work / "sorry.keepalived.conf").write_text(SORRY_CONF)
    return cases


SCENARIO = """\
for a in 192.168.6.2 192.168.6.3 192.168.6.6; do ip addr add $a/32 dev lo; done
"$LAB_PYTHON" -m http.server 80 --bind 0.0.0.0 --directory "$LAB_WORK/www" \\
    > "$LAB_RESULTS/httpd.log" 2>&1 &
"$LAB_PYTHON" {driver} "$LAB_WORK/cases.json" "$LAB_RESULTS"
mkdir -p /run/lab-sorry
keepalived --dont-fork --log-console --no-syslog --check \\
    --use-file="$LAB_WORK/sorry.keepalived.conf" --pid=/run/lab-sorry/p \\
    --checkers_pid=/run/lab-sorry/c --vrrp_pid=/run/lab-sorry/v \\
    > "$LAB_RESULTS/sorry.keepalived.log" 2>&1 &
sorry=$!
i=0
until grep -q "Startup complete" "$LAB_RESULTS/sorry.keepalived.log" || [ $i -ge 100 ]
do sleep 0.1; i=$((i+1)); done
sleep 0.5
ipvsadm -Ln > "$LAB_RESULTS/sorry.txt"
kill $sorry || true
wait $sorry || true
"""


@pytest.fixture(scope="module")
def outcome(module_lab: Lab) -> tuple[list[dict[str, Any]], LabResult]:
    """The one boot: cases prepared on the host, both daemons and lvsd in the guest."""
    missing = [tool for tool in ("keepalived", "ldirectord") if shutil.which(tool) is None]
    if missing or not keepalived_samples() or not LDIRECTORD_EXAMPLE.exists():
        pytest.skip(f"needs keepalived, ldirectord and their samples (missing: {missing})")
    work = module_lab.work / "import"
    work.mkdir()
    cases = prepare(work)
    scenario = Scenario(shell=SCENARIO.replace("{driver}", str(HERE / "guest_import.py")))
    # ldirectord logs to /var/log/ldirectord.log: a tmpfs there keeps the host clean.
    result = harness.run(work, scenario, boot=Boot(tmpfs=("/var/log",), timeout=400))
    assert result.ok, result.log()
    return cases, result


@pytest.fixture(scope="module")
def record(outcome: tuple[list[dict[str, Any]], LabResult]) -> dict[str, dict[str, Any]]:
    """The driver's record by case name."""
    cases, result = outcome
    entries: list[dict[str, Any]] = result.json("import.json")
    assert [c["name"] for c in cases] == [e["name"] for e in entries]
    return {e["name"]: e for e in entries}


def names() -> list[str]:
    sample_names = [
        p.name.removeprefix("keepalived.conf.").replace(".", "_") for p in keepalived_samples()
    ]
    return [*sample_names, "defaults", "example", "ldirectord_defaults"]


@pytest.mark.parametrize("name", names())
def test_imported_config_programs_the_same_table_as_the_daemon(
    record: dict[str, dict[str, Any]], name: str
) -> None:
    """``ipvsadm -Ln`` and ``ipvsadm -Ln --thresholds`` after ``lvsd apply`` of the
    imported config equal the listings the old daemon left (order aside)."""
    entry = record[name]
    assert 0 == entry["apply"]["status"], entry["apply"]["output"]
    lvsd_table = sorted_table(entry["lvsd"]["table"])
    assert lvsd_table, f"lvsd programmed nothing for {name}: {entry['apply']['output']}"
    assert sorted_table(entry["daemon"]["table"]) == lvsd_table
    assert sorted_table(entry["daemon"]["thresholds"]) == sorted_table(entry["lvsd"]["thresholds"])


def test_defaults_case_shows_keepalived_defaults_in_the_kernel(
    record: dict[str, dict[str, Any]],
) -> None:
    """keepalived's own defaults as the kernel got them: UDP without protocol, wlc
    without lb_algo, NAT (Masq) without lb_kind, 360 s for a bare persistence_timeout,
    weight 1 without weight, the service's port for a real server without one; ops
    dropped on TCP; a DR real server moved to the service's port, a NAT one not; a
    firewall-mark DR real server at port 0; no service without real servers; the
    sorry server of a service with a live real server is not in the table."""
    table = sorted_table(record["defaults"]["daemon"]["table"])
    assert ["-> 10.9.0.1:80 Masq 2 0 0", "-> 10.9.0.2:80 Masq 1 0 0"] == table[
        "UDP 192.168.50.1:80 wlc persistent 360"
    ]
    assert ["-> 10.9.0.7:25 Masq 7 0 0"] == table["UDP 192.168.50.3:25 wrr"]
    assert ["-> 10.9.0.8:8080 Masq 1 0 0", "-> 10.9.0.8:8443 Route 8 0 0"] == table[
        "TCP 192.168.50.4:8443 wlc"
    ]
    assert ["-> 10.9.0.5:0 Route 4 0 0"] == table["FWM 7 mh (mh-port)"]
    assert not any("192.168.50.5:80" in service for service in table)


def test_ldirectord_adds_real_servers_that_pass_its_negotiate_check(
    record: dict[str, dict[str, Any]],
) -> None:
    """ldirectord's example: three real servers in direct routing (Route) at weight 1,
    rr, and no fallback (127.0.0.1) while they are up."""
    expected = {
        "TCP 192.168.6.240:80 rr": [
            "-> 192.168.6.2:80 Route 1 0 0",
            "-> 192.168.6.3:80 Route 1 0 0",
            "-> 192.168.6.6:80 Route 1 0 0",
        ]
    }
    assert expected == sorted_table(record["example"]["daemon"]["table"])


def test_first_case_went_through_the_lvsd_apply_command(
    outcome: tuple[list[dict[str, Any]], LabResult], record: dict[str, dict[str, Any]]
) -> None:
    """The first case ran ``python -m lvsd apply -c``; its summary says every op applied."""
    cases, _ = outcome
    first = record[cases[0]["name"]]
    assert re.search(r"(\d+) ops?: \1 applied, 0 failed", first["apply"]["output"]), first["apply"][
        "output"
    ]


def test_keepalived_sorry_server_facts(outcome: tuple[list[dict[str, Any]], LabResult]) -> None:
    """What keepalived 2.2.7 does with a sorry server, as ``docs/migration.md`` says:
    on quorum loss it removes the live real servers and adds the sorry server (lvsd
    keeps live ones beside it); a NAT sorry server without a port goes in at port 0;
    with sorry_server_inhibit an unneeded sorry server stays at weight 0."""
    _, result = outcome
    expected = {
        "TCP 192.168.50.1:80 rr": ["-> 10.9.0.9:8080 Masq 1 0 0"],
        "TCP 192.168.50.2:80 rr": ["-> 10.9.0.9:0 Masq 1 0 0"],
        "TCP 192.168.50.3:80 rr": ["-> 10.9.0.4:80 Masq 3 0 0", "-> 10.9.0.9:80 Masq 0 0 0"],
    }
    assert expected == sorted_table(result.text("sorry.txt"))


def test_ldirectord_defaults_in_the_kernel(record: dict[str, dict[str, Any]]) -> None:
    """ldirectord's own table: wrr without scheduler, weight 1 without weight, the
    service's port for a gate real server without one (ipvsadm sets it; a masq one
    would get port 0, see the importer), UDP for port 53, ops, a firewall mark with
    port-0 real servers, thresholds."""
    table = sorted_table(record["ldirectord_defaults"]["daemon"]["table"])
    expected = {
        "TCP 192.168.60.1:80 sh (sh-fallback,sh-port) persistent 600 mask 255.255.255.0": [
            "-> 10.9.1.1:80 Masq 3 0 0",
            "-> 10.9.1.2:80 Route 1 0 0",
        ],
        "UDP 192.168.60.2:53 wrr ops": ["-> 10.9.1.3:53 Route 1 0 0"],
        "FWM 7 lc persistent 300": ["-> 10.9.1.4:0 Route 2 0 0"],
        "TCP [2001:db8::60]:443 rr": ["-> [2001:db8:9::2]:443 Tunnel 5 0 0"],
    }
    assert expected == table
