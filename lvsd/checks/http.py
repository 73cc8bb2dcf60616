"""The ``http`` and ``https`` kinds (aiohttp client).

The request goes straight to the real server's address (no DNS), with ``Host`` set to
``options.host`` when given (a virtual host), the extra ``options.headers``, and
``Connection: close`` unless ``options.keepalive``. Redirects are not followed. The
status must be in one of ``options.status``; the body (the first 1 MiB of it, decoded
with the response's charset, else UTF-8) must match ``options.body_regex``
(``re.search``) and its MD5 must be ``options.body_digest`` when those are set.

TLS (``https``, or ``tls = true``) verifies the certificate by default, against
``options.ca_file`` or the system store, for the name ``options.sni``, else
``options.host``, else the address (which is also the SNI sent); ``client_cert`` and
``client_key`` present a client certificate; ``verify = false`` turns checking off.

Each probe owns one ``ClientSession``, made on the first run inside the running loop
and closed by :meth:`HttpProbe.close`. TLS contexts are shared by probes with the same
TLS options.

Details: ``"connect 10.0.0.2:80: refused"``, ``"GET /health: status 503, want 200-299"``,
``"GET /: body does not match 'ok'"``, ``"GET /: body digest 9e10..., want 0cc1..."``,
``"TLS: certificate verify failed: self-signed certificate"``,
``"GET /: timeout after 1.0s"``, ``"GET /: server disconnected"``.
"""

from __future__ import annotations

import functools
import hashlib
import re
import ssl
from types import SimpleNamespace

import aiohttp

from lvsd.checks.base import ProbeResult, Target
from lvsd.checks.net import (
    Fail,
    Progress,
    Verdict,
    describe_os_error,
    hostport,
    local_addr,
    run_timed,
)
from lvsd.checks.probe import ProbeBase
from lvsd.config.model import CheckSpec, HttpOptions

#: Bytes of the body kept for ``body_regex`` (the digest covers the whole body).
BODY_LIMIT = 1 << 20

_CHUNK = 65536


@functools.lru_cache(maxsize=64)
def tls_context(
    verify: bool, ca_file: str | None, client_cert: str | None, client_key: str | None
) -> ssl.SSLContext:
    """An SSL context for these options, shared by every probe that uses them."""
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        context.load_cert_chain(client_cert, client_key)
    return context


async def _on_connect_start(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    _params: aiohttp.TraceConnectionCreateStartParams,
) -> None:
    progress = context.trace_request_ctx
    if isinstance(progress, _HttpProgress):
        progress.step = progress.connect_step


async def _on_connect_end(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    _params: aiohttp.TraceConnectionCreateEndParams,
) -> None:
    progress = context.trace_request_ctx
    if isinstance(progress, _HttpProgress):
        progress.step = progress.request_step


@functools.cache
def _trace_config() -> aiohttp.TraceConfig:
    """One trace config for every session: it names the step (connect or request)."""
    trace = aiohttp.TraceConfig()
    trace.on_connection_create_start.append(_on_connect_start)
    trace.on_connection_create_end.append(_on_connect_end)
    return trace


class _HttpProgress(Progress):
    __slots__ = ("connect_step", "request_step")

    def __init__(self, connect_step: str, request_step: str) -> None:
        super().__init__(request_step)
        self.connect_step = connect_step
        self.request_step = request_step


class HttpProbe(ProbeBase[HttpOptions]):
    """Ask the real server for a page and judge status and body (kinds http and https)."""

    __slots__ = ("_regex", "_session", "_url")
    options_type = HttpOptions

    def __init__(self, spec: CheckSpec, target: Target) -> None:
        super().__init__(spec, target)
        options = self._options
        scheme = "https" if options.tls or spec.kind == "https" else "http"
        path = options.path if options.path.startswith("/") else "/" + options.path
        self._url = f"{scheme}://{hostport(target.address, self._port)}{path}"
        self._regex: re.Pattern[str] | str | None = None
        if options.body_regex is not None:
            try:
                self._regex = re.compile(options.body_regex)
            except re.error as exc:
                self._regex = f"bad body_regex {options.body_regex!r}: {exc}"
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return self._url

    def _make_session(self) -> aiohttp.ClientSession:
        options = self._options
        tls: ssl.SSLContext | bool = False
        if self._url.startswith("https:"):
            tls = tls_context(
                options.verify, options.ca_file, options.client_cert, options.client_key
            )
        connector = aiohttp.TCPConnector(
            ssl=tls,
            local_addr=local_addr(self._spec),
            force_close=not options.keepalive,
            limit=1,
            use_dns_cache=False,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            trace_configs=[_trace_config()],
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,
        )

    def _headers(self) -> dict[str, str]:
        headers = dict(self._options.headers)
        if self._options.host is not None:
            headers["Host"] = self._options.host
        if not self._options.keepalive:
            headers["Connection"] = "close"
        return headers

    async def probe(self) -> ProbeResult:
        request = f"{self._options.method} {self._options.path}"
        connect = f"connect {hostport(self._target.address, self._port)}"
        progress = _HttpProgress(connect, request)
        return await run_timed(self._spec.timeout, progress, lambda: self._run(progress))

    async def _run(self, progress: _HttpProgress) -> Verdict:
        if isinstance(self._regex, str):
            raise Fail(f"{progress.request_step}: {self._regex}", "error")
        if self._session is None:
            try:
                self._session = self._make_session()
            except (OSError, ValueError) as exc:  # unreadable ca_file / client cert
                raise Fail(f"TLS: cannot load certificates: {exc}", "error") from exc
        try:
            return await self._request(self._session, progress)
        except aiohttp.ClientConnectorCertificateError as exc:
            cert_error = exc.certificate_error
            text = getattr(cert_error, "verify_message", None) or str(cert_error)
            raise Fail(f"TLS: certificate verify failed: {text}", "tls") from exc
        except aiohttp.ClientSSLError as exc:
            raise Fail(f"TLS: {_ssl_text(exc)}", "tls") from exc
        except aiohttp.ClientConnectorError as exc:
            text, reason = describe_os_error(exc.os_error)
            raise Fail(f"{progress.connect_step}: {text}", reason) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise Fail(f"{progress.step}: server disconnected", "reset") from exc
        except aiohttp.ClientPayloadError as exc:
            raise Fail(f"{progress.step}: body cut short: {exc}", "reset") from exc
        except aiohttp.ClientResponseError as exc:
            raise Fail(f"{progress.step}: bad response: {exc.message}", "protocol") from exc
        except aiohttp.ClientOSError as exc:
            text, reason = describe_os_error(exc)
            raise Fail(f"{progress.step}: {text}", reason) from exc
        except aiohttp.ClientError as exc:
            raise Fail(f"{progress.step}: {type(exc).__name__}: {exc}", "error") from exc

    async def _request(self, session: aiohttp.ClientSession, progress: _HttpProgress) -> Verdict:
        options = self._options
        step = progress.request_step
        server_hostname = options.sni or options.host
        async with session.request(
            options.method,
            self._url,
            headers=self._headers(),
            allow_redirects=False,
            server_hostname=server_hostname if self._url.startswith("https:") else None,
            trace_request_ctx=progress,
        ) as response:
            status = response.status
            if not any(status in wanted for wanted in options.status):
                want = ", ".join(str(wanted) for wanted in options.status)
                raise Fail(f"{step}: status {status}, want {want}", "status")
            progress.step = f"{step}: body"
            digest = hashlib.md5(usedforsecurity=False) if options.body_digest else None
            kept = bytearray()
            async for chunk in response.content.iter_chunked(_CHUNK):
                if digest is not None:
                    digest.update(chunk)
                if len(kept) < BODY_LIMIT:
                    kept += chunk[: BODY_LIMIT - len(kept)]
                elif digest is None:
                    break
            if isinstance(self._regex, re.Pattern):
                text = _decode(bytes(kept), response)
                if self._regex.search(text) is None:
                    raise Fail(f"{step}: body does not match {self._regex.pattern!r}", "body")
            if digest is not None and options.body_digest is not None:
                got = digest.hexdigest()
                if got != options.body_digest.lower():
                    raise Fail(
                        f"{step}: body digest {got}, want {options.body_digest.lower()}", "body"
                    )
            return Verdict(ok=True, detail=f"{step}: status {status}")

    async def close(self) -> None:
        """Close the session (and its connection), if one was made."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _decode(body: bytes, response: aiohttp.ClientResponse) -> str:
    try:
        return body.decode(response.get_encoding(), "replace")
    except LookupError:  # a charset Python does not know
        return body.decode("utf-8", "replace")


def _ssl_text(exc: aiohttp.ClientSSLError) -> str:
    os_error = exc.os_error
    if isinstance(os_error, ssl.SSLError) and os_error.reason:
        return os_error.reason.lower().replace("_", " ")  # WRONG_VERSION_NUMBER
    return str(os_error)
