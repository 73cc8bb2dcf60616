"""The lab's constants: topology, check and traffic settings, the lvsd configs."""

from __future__ import annotations

from pathlib import Path

VIP = "192.168.3.108"
RS = {"rs1": "10.0.0.2", "rs2": "10.0.0.3", "rs3": "10.0.0.4"}
#: The sorry server: its own namespace and address, after the real servers.
SORRY = ("sorry", "10.0.0.5")
MODES = Path("/run/lab-modes")
#: Check timing of the scenarios: a dead server is out within FALL x INTERVAL + TIMEOUT.
#: Checks every 1 s with a 0.9 s timeout (not 0.5 and 0.4) ride out the guest's stalls
#: on a busy host, which failed the probes of all three real servers at once and put the
#: sorry server in.
INTERVAL = 1.0
TIMEOUT = 0.9
FALL = 2
RISE = 2
SLOW_START = 4.0
WEIGHT = 5
#: The reload scenario's new weights: rs1 gets 2 of every 8 connections (25%), rs2 and
#: rs3 together 6 (75%): rs1 against the rest of the pool is 1:3, the issue's split.
RELOAD_WEIGHTS = (2, 3, 3)
BOUND = FALL * INTERVAL + TIMEOUT
#: Client timeout per request (a request sent to a hanging server fails after it). 3 s,
#: not 2: a busy host stalls the guest for seconds at times, and the client must not
#: count the stall as a failure of the director.
CLIENT_TIMEOUT = 3.0
#: How long a fault scenario keeps its fault, and the sorry scenario every server down.
FAULT_HOLD = 9.0
RATE = 50.0

#: The flapping scenario: MANY real servers (addresses of rs1), every FLAP_EVERY-th flaps.
MANY = 200
FLAP_EVERY = 5
FLAP_SECONDS = 60.0
FLAP_PERIOD = 5.0
#: Their http checks' interval: 50 probes a second. At 2 s (100 a second) lvsd alone
#: used half of the guest's one CPU and the guest was busy 95% of the minute, with no
#: room left for a host running at half speed (a CI machine).
MANY_INTERVAL = 4.0
#: The flapping scenario judges a real server's kernel weight against its reported
#: health only when its last transition is this much older (seconds) than the sample:
#: the batch window, the reconcile and its netlink writes happen within it.
SETTLE = 1.0
#: Pause between two samples of the flapping scenario (a sample itself takes ~0.5 s).
SAMPLE_PAUSE = 0.5
#: The flapping scenario's goal for an answer: within this many seconds of lvsd's own
#: time (``own_time``: not counting the guest's stalls, see ``lab.stall``, nor
#: lvsd's waits for the guest's CPU).
ANSWER_WITHIN = 1.0
#: Runs of the flapping scenario at most: one in which the guest's other processes
#: starved lvsd of the CPU is not judged, and the next one is.
FLAP_ATTEMPTS = 3


CONTROL = "/run/lvsd/control.sock"

SCENARIOS = (
    "kill",
    "hang",
    "status500",
    "link",
    "drain",
    "restart",
    "reload_weights",
    "reload_broken",
    "sorry",
    "watchdog",
)
#: Where the lab's drop-ins of lvsd.service are (inside the guest's overlay).
DROPIN_DIR = "/etc/systemd/system/lvsd.service.d"


def config_text(
    weights: tuple[int, ...] = (WEIGHT,) * len(RS), *, broken: bool = False, sorry: bool = True
) -> str:
    """The scenarios' config: one wrr service on the VIP, http checks, slow start."""
    servers = "".join(
        f'\n[[services.web.real_servers]]\naddress = "{addr}"\nport = 80\nweight = {w}\n'
        for addr, w in zip(RS.values(), weights, strict=True)
    )
    sorry_line = f'sorry_server = {{ address = "{SORRY[1]}", port = 80 }}\n' if sorry else ""
    text = (
        "# lvsd e2e scenarios (written by lab.e2e)\n"
        '[daemon]\nmetrics_listen = "127.0.0.1:9475"\nreconcile_interval = 5.0\n\n'
        '[defaults]\nscheduler = "wrr"\nforward = "nat"\n'
        f"slow_start = {SLOW_START}\n\n"
        f"[defaults.check]\ninterval = {INTERVAL}\ntimeout = {TIMEOUT}\n"
        f"rise = {RISE}\nfall = {FALL}\n\n"
        f'[services.web]\naddress = "{VIP}"\nport = 80\nprotocol = "tcp"\n{sorry_line}\n'
        '[[services.web.checks]]\nkind = "http"\npath = "/"\n' + servers
    )
    if broken:
        text += "\n[services.broken]\naddress = 12\n"
    return text


def many_addresses(n: int = MANY) -> list[str]:
    """10.0.0.2, 10.0.0.3, ... (all on rs1's eth0)."""
    return [f"10.0.{(i + 2) // 256}.{(i + 2) % 256}" for i in range(n)]


def many_config_text(n: int = MANY) -> str:
    """``n`` real servers behind the VIP, http checks every MANY_INTERVAL s."""
    servers = "".join(
        f'\n[[services.web.real_servers]]\naddress = "{a}"\nport = 80\nweight = 1\n'
        for a in many_addresses(n)
    )
    return (
        "# lvsd e2e: many real servers, some flapping (written by lab.e2e)\n"
        '[daemon]\nmetrics_listen = "127.0.0.1:9475"\nreconcile_interval = 5.0\n\n'
        '[defaults]\nscheduler = "wrr"\nforward = "nat"\n\n'
        f"[defaults.check]\ninterval = {MANY_INTERVAL}\ntimeout = 1.0\nrise = 1\nfall = 1\n\n"
        f'[services.web]\naddress = "{VIP}"\nport = 80\nprotocol = "tcp"\n\n'
        '[[services.web.checks]]\nkind = "http"\npath = "/"\n' + servers
    )
