"""The ``http`` and ``https`` kinds (one HTTP/1.1 exchange, parsed by httptools).

The request goes straight to the real server's address (no DNS), with ``Host`` set to
``options.host`` when given (a virtual host), the extra ``options.headers``, and
``Connection: close`` unless ``options.keepalive`` (then one connection is kept and
reused while the server allows it). Redirects are not followed. The status must be in
one of ``options.status``; the body (the first 1 MiB of it, decoded with the
response's charset, else UTF-8) must match ``options.body_regex`` (``re.search``), must
not match ``options.body_not_regex``, and its MD5 must be ``options.body_digest`` when
those are set; each response header of ``options.header_regex`` must be present and
match its regex. The body is read to its end (up to 1 MiB without a digest),
Content-Length, chunked or until close. A header, method or path with a line break is
refused, never sent; headers past 64 KiB fail.

TLS (``https``, or ``tls = true``) verifies the certificate by default, against
``options.ca_file`` or the system store, for the name ``options.sni``, else
``options.host``, else the address (which is also the SNI sent); ``client_cert`` and
``client_key`` present a client certificate; ``verify = false`` turns checking off.
TLS contexts are shared by probes with the same TLS options.

Details: ``"connect 10.0.0.2:80: refused"``, ``"GET /health: status 503, want 200-299"``,
``"GET /: body does not match 'ok'"``, ``"GET /: body digest 9e10..., want 0cc1..."``,
``"TLS: certificate verify failed: self-signed certificate"``,
``"GET /: timeout after 1.0s"``, ``"GET /: server disconnected"``,
``"GET /: bad response: invalid HTTP status line"``, ``"GET /: body matches 'maint'"``,
``"GET /: no header X-Ready"``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import ssl

from lvsd.checks.base import ProbeResult, Target
from lvsd.checks.http_wire import (
    BadResponse,
    CutShort,
    Disconnected,
    Exchange,
    build_request,
    connect,
)
from lvsd.checks.net import Fail, Progress, Verdict, describe_os_error, hostport, run_timed
from lvsd.checks.probe import ProbeBase
from lvsd.config.model import CheckSpec, HttpOptions

#: Bytes of the body kept for ``body_regex`` (the digest covers the whole body).
BODY_LIMIT = 1 << 20

_DEFAULT_PORT = {"http": 80, "https": 443}


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


class HttpProbe(ProbeBase[HttpOptions]):
    """Ask the real server for a page and judge status and body (kinds http and https)."""

    __slots__ = (
        "_connect_step",
        "_exchange",
        "_header_regex",
        "_not_regex",
        "_regex",
        "_request",
        "_request_step",
        "_tls",
        "_url",
    )
    options_type = HttpOptions

    def __init__(self, spec: CheckSpec, target: Target) -> None:
        super().__init__(spec, target)
        options = self._options
        scheme = "https" if options.tls or spec.kind == "https" else "http"
        self._tls = scheme == "https"
        path = options.path if options.path.startswith("/") else "/" + options.path
        where = hostport(target.address, self._port)
        self._url = f"{scheme}://{where}{path}"
        self._connect_step = f"connect {where}"
        self._request_step = f"{options.method} {options.path}"
        host = options.host
        if host is None:
            host = (
                where if self._port != _DEFAULT_PORT[scheme] else hostport(target.address, 0)[:-2]
            )
        self._request = build_request(
            options.method, path, host, options.headers, close=not options.keepalive
        )
        self._regex = _compile("body_regex", options.body_regex)
        self._not_regex = _compile("body_not_regex", options.body_not_regex)
        self._header_regex = tuple(
            (name, _compile(f"header_regex {name}", pattern))
            for name, pattern in options.header_regex
        )
        self._exchange: Exchange | None = None

    @property
    def url(self) -> str:
        return self._url

    async def probe(self) -> ProbeResult:
        progress = Progress(self._request_step)
        return await run_timed(self._spec.timeout, progress, lambda: self._run(progress))

    async def _run(self, progress: Progress) -> Verdict:
        step = self._request_step
        patterns = (self._regex, self._not_regex, *(p for _, p in self._header_regex))
        bad = next((p for p in patterns if isinstance(p, str)), None)
        if bad is not None:
            raise Fail(f"{step}: {bad}", "error")
        if isinstance(self._request, str):
            raise Fail(f"{step}: {self._request}", "error")
        exchange = self._exchange
        self._exchange = None
        if exchange is None or exchange.closed:
            progress.step = self._connect_step
            exchange = await self._open()
            progress.step = step
        try:
            verdict = await self._ask(exchange, progress)
        except (BadResponse, Disconnected, CutShort, ssl.SSLError) as exc:
            raise _translate(exc, progress.step) from exc
        finally:
            if self._options.keepalive and exchange.keep_alive():
                self._exchange = exchange
            else:
                exchange.close()
        return verdict

    async def _open(self) -> Exchange:
        """A new connection (TLS handshake included) with its response parser."""
        options = self._options
        context: ssl.SSLContext | None = None
        if self._tls:
            try:
                context = tls_context(
                    options.verify, options.ca_file, options.client_cert, options.client_key
                )
            except (OSError, ValueError) as exc:  # unreadable ca_file / client cert
                raise Fail(f"TLS: cannot load certificates: {exc}", "error") from exc
        sock = await connect(self._spec, self._target, self._port)
        loop = asyncio.get_running_loop()
        name = options.sni or options.host or str(self._target.address)
        try:
            _, exchange = await loop.create_connection(
                Exchange, sock=sock, ssl=context, server_hostname=name if context else None
            )
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            text = exc.verify_message or str(exc)
            raise Fail(f"TLS: certificate verify failed: {text}", "tls") from exc
        except ssl.SSLError as exc:
            sock.close()
            raise Fail(f"TLS: {_ssl_text(exc)}", "tls") from exc
        except BaseException:
            sock.close()
            raise
        return exchange

    async def _ask(self, exchange: Exchange, progress: Progress) -> Verdict:
        options = self._options
        step = self._request_step
        assert isinstance(self._request, bytes)
        assert exchange.transport is not None
        exchange.reset(head_only=options.method.upper() == "HEAD")
        digest = hashlib.md5(usedforsecurity=False) if options.body_digest else None
        kept = bytearray()

        def consume(chunk: bytes) -> bool:
            if digest is not None:
                digest.update(chunk)
            if len(kept) < BODY_LIMIT:
                kept.extend(chunk[: BODY_LIMIT - len(kept)])
            return digest is not None or len(kept) < BODY_LIMIT

        exchange.consume = consume
        exchange.transport.write(self._request)
        await exchange.wait(lambda: exchange.head_done)
        status = exchange.status
        if not any(status in wanted for wanted in options.status):
            want = ", ".join(str(wanted) for wanted in options.status)
            raise Fail(f"{step}: status {status}, want {want}", "status")
        for name, pattern in self._header_regex:
            _match_header(step, exchange.headers, name, pattern)
        progress.step = f"{step}: body"
        await exchange.wait(lambda: exchange.message_done)
        if self._regex is not None or self._not_regex is not None:
            text = _decode(bytes(kept), exchange.headers.get(b"content-type", b""))
            if isinstance(self._regex, re.Pattern) and self._regex.search(text) is None:
                raise Fail(f"{step}: body does not match {self._regex.pattern!r}", "body")
            if isinstance(self._not_regex, re.Pattern) and self._not_regex.search(text):
                raise Fail(f"{step}: body matches {self._not_regex.pattern!r}", "body")
        if digest is not None and options.body_digest is not None:
            got = digest.hexdigest()
            if got != options.body_digest.lower():
                raise Fail(f"{step}: body digest {got}, want {options.body_digest.lower()}", "body")
        return Verdict(ok=True, detail=f"{step}: status {status}")

    async def close(self) -> None:
        """Close the kept connection, if any."""
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            exchange.close()


def _compile(option: str, pattern: str | None) -> re.Pattern[str] | str | None:
    """``pattern`` compiled, or why it does not compile (None: no pattern)."""
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        return f"bad {option} {pattern!r}: {exc}"


def _match_header(
    step: str, headers: dict[bytes, bytes], name: str, pattern: re.Pattern[str] | str | None
) -> None:
    """Fail unless response header ``name`` is there and its value matches ``pattern``."""
    value = headers.get(name.lower().encode("latin-1"))
    if value is None:
        raise Fail(f"{step}: no header {name}", "body")
    text = value.decode("latin-1")
    if isinstance(pattern, re.Pattern) and pattern.search(text) is None:
        raise Fail(f"{step}: header {name} {text!r} does not match {pattern.pattern!r}", "body")


def _translate(exc: Exception, step: str) -> Fail:
    """The failure a broken exchange means, named by the step it broke in."""
    if isinstance(exc, Disconnected):
        return Fail(f"{step}: server disconnected", "reset")
    if isinstance(exc, CutShort):
        return Fail(f"{step}: body cut short: {exc}", "reset")
    if isinstance(exc, BadResponse):
        return Fail(f"{step}: bad response: {exc}", "protocol")
    assert isinstance(exc, OSError)
    text, reason = describe_os_error(exc)
    return Fail(f"{step}: {text}", reason)


_CHARSET = re.compile(rb"""charset\s*=\s*["']?([-\w.:]+)""", re.IGNORECASE)


def _decode(body: bytes, content_type: bytes) -> str:
    found = _CHARSET.search(content_type)
    charset = found.group(1).decode("ascii") if found else "utf-8"
    try:
        return body.decode(charset, "replace")
    except LookupError:  # a charset Python does not know
        return body.decode("utf-8", "replace")


def _ssl_text(exc: ssl.SSLError) -> str:
    if exc.reason:
        return exc.reason.lower().replace("_", " ")  # WRONG_VERSION_NUMBER
    return str(exc)
