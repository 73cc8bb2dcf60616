"""The HTTP port's web config file (exporter-toolkit format): what it reads, and each
problem with the file, key and line, through ``lvsd check``'s loader too."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import ssl
from pathlib import Path

import bcrypt
import pytest

from lvsd.config import load
from lvsd.config.web import load_web
from lvsd.errors import ConfigError
from tests.checks.conftest import Certs, certs  # noqa: F401 -- the fixture, shared
from tests.config.helpers import REPO, problems, write

HASH = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)


def web_problems(path: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as caught:
        load_web(path)
    assert {path} == {p.file for p in caught.value.problems}
    return [(p.key, p.line, p.message) for p in caught.value.problems]


def test_reads_tls_and_users(tmp_path: Path, certs: Certs) -> None:  # noqa: F811
    """cert_file and key_file relative to the file's folder, a client CA, TLS 1.3 at
    least, users with their hashes (htpasswd's $2y$ too)."""
    (tmp_path / "tls").mkdir()
    for name, source in (("c.pem", certs.server_cert), ("k.pem", certs.server_key)):
        (tmp_path / "tls" / name).write_bytes(source.read_bytes())
    path = write(
        tmp_path,
        "web.yml",
        f"""
        tls_server_config:
          cert_file: tls/c.pem
          key_file: tls/k.pem
          client_ca_file: {certs.ca}
          client_auth_type: RequireAndVerifyClientCert
          min_version: TLS13
        basic_auth_users:
          prometheus: '{HASH}'
        """,
    )
    web = load_web(path)
    assert (str(tmp_path / "tls" / "c.pem"), True) == (web.cert_file, web.client_auth)
    assert {"prometheus": HASH.encode()} == dict(web.users)
    context = web.ssl_context()
    assert context is not None
    assert (ssl.TLSVersion.TLSv1_3, ssl.CERT_REQUIRED) == (
        context.minimum_version,
        context.verify_mode,
    )


def test_an_empty_file_is_plain_http(tmp_path: Path) -> None:
    """Nothing set: no TLS, no users."""
    web = load_web(write(tmp_path, "web.yml", "# nothing\n"))
    assert (None, {}) == (web.ssl_context(), dict(web.users))


def test_problems_name_key_and_line(tmp_path: Path, certs: Certs) -> None:  # noqa: F811
    """A missing key file, a bad hash, an unsupported key and an insecure client auth
    type are each named with their line."""
    path = write(
        tmp_path,
        "web.yml",
        f"""
        tls_server_config:
          cert_file: {certs.server_cert}
          key_file: {tmp_path}/missing.key
          client_auth_type: RequestClientCert
          cipher_suites: [TLS_AES_128_GCM_SHA256]
        http_server_config:
          http2: false
        basic_auth_users:
          alice: plaintext
        """,
    )
    assert [
        ("tls_server_config.cipher_suites", 5, "not supported by lvsd (it reads cert_file, "
         "key_file, client_ca_file, client_auth_type, min_version)"),
        ("tls_server_config.key_file", 3, f"cannot read {tmp_path}/missing.key"),
        ("tls_server_config.client_auth_type", 4, "expected NoClientCert or "
         "RequireAndVerifyClientCert (the others are insecure), got 'RequestClientCert'"),
        ("http_server_config", 6, "not supported by lvsd (tls_server_config and "
         "basic_auth_users are)"),
        ("basic_auth_users.alice", 9, 'expected a bcrypt hash ($2y$10$ and 53 characters: '
         'htpasswd -nBC 10 "")'),
    ] == sorted(web_problems(path), key=lambda p: ("basic" in p[0], "http" in p[0]))  # fmt: skip


def test_a_key_that_is_not_the_certificates(tmp_path: Path, certs: Certs) -> None:  # noqa: F811
    """A readable key of another certificate is refused at the cert_file line."""
    path = write(
        tmp_path,
        "web.yml",
        f"""
        tls_server_config:
          cert_file: {certs.server_cert}
          key_file: {certs.rogue_key}
        """,
    )
    [(key, line, message)] = web_problems(path)
    assert ("tls_server_config.cert_file", 2) == (key, line)
    assert message.startswith("cannot use the certificate and key: "), message


def test_not_yaml(tmp_path: Path) -> None:
    """A YAML syntax error says where."""
    path = write(tmp_path, "web.yml", "basic_auth_users:\n  alice: [\n")
    [(key, line, message)] = web_problems(path)
    assert ("", 3) == (key, line)
    assert message.startswith("not YAML: "), message


def test_check_reports_the_web_config(tmp_path: Path) -> None:
    """``lvsd check`` (the loader) lists the web file's problems with its lines, and
    a missing file at the web_config_file line of the config."""
    web = write(tmp_path, "web.yml", "basic_auth_users:\n  alice: nope\n")
    path = write(tmp_path, "c.toml", f'[daemon]\nweb_config_file = "{web}"\n')
    assert [(web, "basic_auth_users.alice", 2)] == [p[:3] for p in problems(path)]
    path = write(tmp_path, "c.toml", f'[daemon]\nweb_config_file = "{tmp_path}/none.yml"\n')
    assert [(path, "daemon.web_config_file", 2, f"{tmp_path}/none.yml does not exist")] == (
        problems(path)
    )
    path = write(tmp_path, "c.toml", '[daemon]\nweb_config_file = "web.yml"\n')
    assert ["expected an absolute path"] == [p[3][:25] for p in problems(path)]
    ok = write(tmp_path, "ok.yml", f"basic_auth_users:\n  alice: '{HASH}'\n")
    path = write(tmp_path, "c.toml", f'[daemon]\nweb_config_file = "{ok}"\n')
    assert ok == load(path).daemon.web_config_file


def test_the_docs_example_loads(tmp_path: Path, certs: Certs) -> None:  # noqa: F811
    """docs/metrics.md's web.yml loads, with a certificate and key in its folder."""
    text = (REPO / "docs" / "metrics.md").read_text()
    example = text.split("# /etc/lvsd/web.yml")[1].split("```")[0].split("\n", 1)[1]
    (tmp_path / "director1.pem").write_bytes(certs.server_cert.read_bytes())
    (tmp_path / "director1.key").write_bytes(certs.server_key.read_bytes())
    web = load_web(write(tmp_path, "web.yml", example))
    assert (True, ["prometheus"]) == (web.ssl_context() is not None, list(web.users))
    assert bcrypt.checkpw(b"change me", web.users["prometheus"])
