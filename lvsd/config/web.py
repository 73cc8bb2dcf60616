"""The HTTP port's web config file (``[daemon] web_config_file``): TLS and basic auth
in the format of the Prometheus exporter toolkit (``--web.config.file``), so one file
serves lvsd and the exporters beside it.

Read: ``tls_server_config`` (``cert_file``, ``key_file``, ``client_ca_file``,
``client_auth_type`` of ``NoClientCert`` or ``RequireAndVerifyClientCert``,
``min_version`` of ``TLS12`` or ``TLS13``) and ``basic_auth_users`` (user: bcrypt
hash). Other keys of the format are refused by name, not ignored: a file that asks
for something lvsd does not do must not seem to work. Relative paths are relative to
the file's folder, as in the toolkit. Every problem names the file, key and line.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from lvsd.errors import ConfigError, Problem

#: A bcrypt hash as htpasswd -B and the bcrypt libraries write it.
BCRYPT = re.compile(r"\$2[abxy]?\$(\d\d)\$[./A-Za-z0-9]{53}")

_TLS_KEYS = ("cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version")
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = ("NoClientCert", "RequireAndVerifyClientCert")


@dataclass(frozen=True, slots=True, kw_only=True)
class WebConfig:
    """What the HTTP port serves with: TLS when ``cert_file`` is set, basic auth when
    ``users`` is not empty."""

    path: str
    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""
    client_auth: bool = False  # RequireAndVerifyClientCert
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    users: Mapping[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server's TLS context (None without TLS); raises ssl.SSLError or OSError
        for a certificate or key that cannot be used."""
        if not self.cert_file:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = self.min_version
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            context.load_verify_locations(self.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED if self.client_auth else ssl.CERT_NONE
        return context


def load_web(path: str) -> WebConfig:
    """Read and check ``path`` (its certificate and key are loaded once); raises
    ConfigError listing every problem."""
    reader = _Reader(path)
    web = reader.read()
    if reader.problems or web is None:
        raise ConfigError(reader.problems)
    return web


#: A YAML mapping's items by key: (key node, value node).
_Items = dict[str, tuple[yaml.Node, yaml.Node]]


class _Reader:
    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[Problem] = []

    def problem(self, key: str, node: yaml.Node | None, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else None
        self.problems.append(Problem(self.path, key, message, line))

    def read(self) -> WebConfig | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                root = yaml.compose(f, Loader=yaml.SafeLoader)
        except (OSError, UnicodeDecodeError) as exc:
            self.problem("", None, f"cannot read: {exc}")
            return None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            self.problems.append(Problem(self.path, "", f"not YAML: {problem}", line))
            return None
        top = self.mapping("", root) if root is not None else {}
        for key, (node, _) in top.items():
            if key not in ("tls_server_config", "basic_auth_users"):
                why = "not supported by lvsd (tls_server_config and basic_auth_users are)"
                self.problem(key, node, why)
        tls = self.section(top, "tls_server_config")
        settings: dict[str, str] = {}
        for key, (node, value) in tls.items():
            where = f"tls_server_config.{key}"
            if key not in _TLS_KEYS:
                why = f"not supported by lvsd (it reads {', '.join(_TLS_KEYS)})"
                self.problem(where, node, why)
            elif not isinstance(value, yaml.ScalarNode) or not value.value:
                self.problem(where, value, "expected a non-empty string")
            else:
                settings[key] = value.value
        web = self.tls(settings, tls)
        users = {}
        for user, (_, value) in self.section(top, "basic_auth_users").items():
            hashed = value.value if isinstance(value, yaml.ScalarNode) else ""
            match = BCRYPT.fullmatch(hashed)
            if match is None or not 4 <= int(match.group(1)) <= 31:
                why = 'expected a bcrypt hash ($2y$10$ and 53 characters: htpasswd -nBC 10 "")'
                self.problem(f"basic_auth_users.{user}", value, why)
            else:
                users[user] = hashed.encode()
        return WebConfig(path=self.path, users=users, **web) if not self.problems else None

    def tls(self, settings: dict[str, str], nodes: _Items) -> dict[str, Any]:
        """The TLS fields of :class:`WebConfig` from ``settings``, files checked."""

        def at(key: str) -> yaml.Node | None:
            return nodes[key][1] if key in nodes else None

        out: dict[str, Any] = {}
        folder = os.path.dirname(os.path.abspath(self.path))
        for key in ("cert_file", "key_file", "client_ca_file"):
            if key in settings:
                file = os.path.join(folder, settings[key])
                if not os.access(file, os.R_OK):
                    self.problem(f"tls_server_config.{key}", at(key), f"cannot read {file}")
                out[key] = file
        if ("cert_file" in settings) != ("key_file" in settings):
            self.problem("tls_server_config", None, "cert_file and key_file go together")
        version = settings.get("min_version", "TLS12")
        if version not in _VERSIONS:
            why = f"expected TLS12 or TLS13, got {version!r}"
            self.problem("tls_server_config.min_version", at("min_version"), why)
        else:
            out["min_version"] = _VERSIONS[version]
        auth = settings.get("client_auth_type", "NoClientCert")
        why = ""
        if auth not in _CLIENT_AUTH:
            why = f"expected {' or '.join(_CLIENT_AUTH)} (the others are insecure), got {auth!r}"
        elif auth == _CLIENT_AUTH[1] and "client_ca_file" not in settings:
            why = "RequireAndVerifyClientCert needs client_ca_file"
        if why:
            self.problem("tls_server_config.client_auth_type", at("client_auth_type"), why)
        out["client_auth"] = auth == _CLIENT_AUTH[1]
        if not self.problems and out.get("cert_file"):
            try:
                WebConfig(path=self.path, **out).ssl_context()
            except (ssl.SSLError, OSError) as exc:
                why = f"cannot use the certificate and key: {exc}"
                self.problem("tls_server_config.cert_file", at("cert_file"), why)
        return out

    def section(self, top: _Items, key: str) -> _Items:
        """The items of the mapping ``top[key]`` (none when it is absent)."""
        return self.mapping(key, top[key][1]) if key in top else {}

    def mapping(self, key: str, node: yaml.Node) -> _Items:
        """A YAML mapping's items by key (key node, value node); a problem if it is not one."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(key, node, "expected a mapping")
            return {}
        return {str(k.value): (k, v) for k, v in node.value}


__all__ = ["BCRYPT", "WebConfig", "load_web"]
