"""The HTTP port with a web config: TLS (with and without client certificates) and
basic auth, served on loopback with a throwaway CA."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import bcrypt
import pytest
from prometheus_client import CollectorRegistry

from lvsd.config.web import WebConfig
from lvsd.observe.api import bound_port, start
from lvsd.observe.metrics import Metrics
from tests.checks.conftest import Certs, certs  # noqa: F401 -- the fixture, shared
from tests.observe.test_api import FakeSource

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4))


@asynccontextmanager
async def serving(web: WebConfig) -> AsyncIterator[str]:
    runner = await start("127.0.0.1:0", FakeSource(), Metrics(CollectorRegistry()), web)
    try:
        yield (
            f"https://127.0.0.1:{bound_port(runner)}"
            if web.cert_file
            else (f"http://127.0.0.1:{bound_port(runner)}")
        )
    finally:
        await runner.cleanup()


def client_tls(certs: Certs, *, with_cert: bool = False) -> ssl.SSLContext:  # noqa: F811
    context = ssl.create_default_context(cafile=str(certs.ca))
    if with_cert:
        context.load_cert_chain(certs.client_cert, certs.client_key)
    return context


async def fetch(
    url: str, tls: ssl.SSLContext | bool = True, auth: tuple[str, str] | None = None
) -> tuple[int, str]:
    """The status and the challenge of a GET, with ``auth`` as (user, password)."""
    headers = {}
    if auth is not None:
        token = base64.b64encode(":".join(auth).encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, ssl=tls, headers=headers) as response,
    ):
        return response.status, response.headers.get("WWW-Authenticate", "")


async def test_tls_and_basic_auth(certs: Certs) -> None:  # noqa: F811
    """Over TLS: no or wrong credentials get 401 with a Basic challenge, on every
    path; the right ones get the answer, again from the remembered pair."""
    web = WebConfig(
        path="web.yml",
        cert_file=str(certs.server_cert),
        key_file=str(certs.server_key),
        users={"prometheus": HASH},
    )
    tls = client_tls(certs)
    async with serving(web) as base:
        challenge = 'Basic realm="lvsd", charset="UTF-8"'
        assert (401, challenge) == await fetch(base + "/metrics", tls)
        assert (401, challenge) == await fetch(base + "/healthz", tls)
        wrong = ("prometheus", "nope")
        assert 401 == (await fetch(base + "/metrics", tls, wrong))[0]
        other = ("alice", "s3cret")
        assert 401 == (await fetch(base + "/", tls, other))[0]
        right = ("prometheus", "s3cret")
        assert [200, 200, 200] == [
            (await fetch(base + path, tls, right))[0] for path in ("/metrics", "/metrics", "/")
        ]
        with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS port
            await fetch(base.replace("https:", "http:") + "/healthz")


async def test_client_certificates_required(certs: Certs) -> None:  # noqa: F811
    """RequireAndVerifyClientCert: a client without a certificate of the CA is cut
    off in the handshake; with one it is served (no basic auth configured)."""
    web = WebConfig(
        path="web.yml",
        cert_file=str(certs.server_cert),
        key_file=str(certs.server_key),
        client_ca_file=str(certs.ca),
        client_auth=True,
    )
    async with serving(web) as base:
        with pytest.raises(aiohttp.ClientError):
            await fetch(base + "/healthz", client_tls(certs))
        assert 200 == (await fetch(base + "/healthz", client_tls(certs, with_cert=True)))[0]


async def test_basic_auth_without_tls(certs: Certs) -> None:  # noqa: F811
    """Users without TLS (loopback behind a proxy): basic auth alone."""
    async with serving(WebConfig(path="web.yml", users={"p": HASH})) as base:
        assert 401 == (await fetch(base + "/healthz"))[0]
        assert 200 == (await fetch(base + "/healthz", auth=("p", "s3cret")))[0]
