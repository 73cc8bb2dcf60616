"""A daemon with ``web_config_file``: its HTTP port speaks TLS and asks for basic auth."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import base64
import socket
import ssl
from pathlib import Path

import aiohttp
import bcrypt

from lvsd.config.model import DaemonConfig
from lvsd.daemon.lifecycle import restart_needed
from tests.checks.conftest import Certs, certs  # noqa: F401 -- the fixture, shared
from tests.daemon.helpers import config_text, running


async def test_daemon_serves_tls_with_basic_auth(short_dir: Path, certs: Certs) -> None:  # noqa: F811
    """The daemon reads the web config at start: https with the configured certificate,
    401 without the password, the metrics with it."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    web = short_dir / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {certs.server_cert}\n  key_file: {certs.server_key}\n"
        f"basic_auth_users:\n  prom: '{hashed}'\n"
    )
    with socket.socket() as probe:  # a free port (the config refuses port 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = config_text(short_dir, metrics_listen=f"127.0.0.1:{port}").replace(
        "[daemon]\n", f'[daemon]\nweb_config_file = "{web}"\n', 1
    )
    tls = ssl.create_default_context(cafile=str(certs.ca))
    token = base64.b64encode(b"prom:pw").decode()
    async with running(short_dir, text) as r, aiohttp.ClientSession() as http:
        url = f"https://127.0.0.1:{r.daemon.api_port}/metrics"
        async with http.get(url, ssl=tls) as response:
            assert 401 == response.status
        async with http.get(url, ssl=tls, headers={"Authorization": f"Basic {token}"}) as response:
            assert 200 == response.status
            assert "lvsd_real_server_health{" in await response.text()


def test_a_changed_web_config_file_needs_a_restart() -> None:
    """A reload that names another web config file says it takes effect at restart."""
    old, new = DaemonConfig(), DaemonConfig(web_config_file="/etc/lvsd/web.yml")
    assert ("daemon.web_config_file",) == restart_needed(old, new)
