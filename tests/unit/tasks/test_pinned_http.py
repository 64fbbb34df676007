"""Pinned outbound HTTP (``tasks.pinned_http``), for real on loopback: fetch, post, deadlines and TLS."""

from __future__ import annotations

import datetime
import http.server
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from tasks import pinned_http
from tasks.errors import (
    MediaFetchError,
    MediaNotFoundError,
    MediaTooLargeError,
    UrlRefusedError,
)
from tests.support.loopback import (
    NAMES,
    Answer,
    Names,
    Server,
    closed_port,
    drip_body,
    drip_head,
    fetch,
    hang,
    ok,
    post,
    redirect,
    status,
)

LOOPBACK_1 = (IPv4Network("127.0.0.1/32"),)
PUBLIC = "93.184.215.14"


# --- fetch, for real, on loopback -----------------------------------------------------------------------------------


def test_fetch_gets_the_body_with_samq_as_user_agent(server: Server) -> None:
    server.routes["/img?size=1"] = ok(b"png bytes")
    assert fetch(f"{server.url}/img?size=1") == b"png bytes"
    assert server.seen[0].user_agent == "samq"
    assert server.seen[0].host == f"127.0.0.1:{server.port}"


def test_fetch_reads_a_body_without_content_length(server: Server) -> None:
    server.routes["/img"] = ok(b"y" * 300_000, length=False)
    assert fetch(f"{server.url}/img") == b"y" * 300_000


def test_dns_rebinding_cannot_swap_the_address(server: Server) -> None:
    """The name is resolved once and the connection goes to that answer; a second lookup would say 10.0.0.1."""
    server.routes["/img"] = ok(b"pinned")
    names = Names(rebind_test=[["127.0.0.1"], ["10.0.0.1"]])
    assert fetch(f"http://rebind.test:{server.port}/img", resolver=names) == b"pinned"
    assert names.calls == ["rebind.test"]
    assert server.seen[0].host == f"rebind.test:{server.port}"
    with pytest.raises(UrlRefusedError, match=r"rebind\.test: 10\.0\.0\.1 is a private address"):
        fetch(f"http://rebind.test:{server.port}/img", resolver=names)


def test_each_redirect_hop_is_resolved_and_judged_again(server: Server) -> None:
    server.routes["/hop"] = redirect("/img")
    server.routes["/img"] = ok()
    names = Names(rebind_test=[["127.0.0.1"], ["127.0.0.2"]])
    with pytest.raises(UrlRefusedError, match=r"127\.0\.0\.2 is a loopback address"):
        fetch(f"http://rebind.test:{server.port}/hop", resolver=names)
    assert names.calls == ["rebind.test", "rebind.test"]
    assert server.paths() == ["/hop"]


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://127.0.0.2:{port}/img", "127.0.0.2 is a loopback address"),
        ("http://[::1]:{port}/img", "::1 is a loopback address"),
        ("http://localhost:{port}/img", "localhost: ::1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("file:///etc/passwd", "file:///etc/passwd is not an http(s) URL"),
        ("gopher://127.0.0.1:{port}/_INFO", "is not an http(s) URL"),
    ],
)
def test_redirects_to_refused_places_are_refused(server: Server, location: str, reason: str) -> None:
    server.routes["/go"] = redirect(location.format(port=server.port), 301)
    server.routes["/img"] = ok()
    names = Names(localhost=[["127.0.0.1", "::1"]])
    with pytest.raises(UrlRefusedError) as refused:
        fetch(f"{server.url}/go", resolver=names)
    assert reason in refused.value.message
    assert server.paths() == ["/go"]


def test_redirects_within_the_allowed_host_are_followed(server: Server) -> None:
    server.routes["/a"] = redirect("/b", 301)
    server.routes["/b"] = redirect(f"{server.url}/c", 307)
    server.routes["/c"] = redirect("d", 308)
    server.routes["/d"] = ok(b"three hops")
    assert fetch(f"{server.url}/a") == b"three hops"
    assert server.paths() == ["/a", "/b", "/c", "/d"]


def test_a_fourth_redirect_is_refused(server: Server) -> None:
    for hop in range(1, 5):
        server.routes[f"/r{hop}"] = redirect(f"/r{hop + 1}", 302 if hop % 2 else 303)
    server.routes["/r5"] = ok()
    with pytest.raises(UrlRefusedError, match="redirected more than 3 times"):
        fetch(f"{server.url}/r1")
    assert server.paths() == ["/r1", "/r2", "/r3", "/r4"]


def test_a_redirect_without_location_is_refused(server: Server) -> None:
    server.routes["/nowhere"] = status(302)
    with pytest.raises(UrlRefusedError, match="without a Location"):
        fetch(f"{server.url}/nowhere")


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (404, MediaNotFoundError),
        (410, MediaNotFoundError),
        (403, UrlRefusedError),
        (400, UrlRefusedError),
        (429, MediaFetchError),
        (500, MediaFetchError),
        (503, MediaFetchError),
    ],
)
def test_status_codes_map_to_job_errors(server: Server, code: int, error: type[Exception]) -> None:
    server.routes["/x"] = status(code)
    with pytest.raises(error, match=f"answered {code}"):
        fetch(f"{server.url}/x")


def test_a_refused_connection_is_transient() -> None:
    with pytest.raises(MediaFetchError, match="connection refused") as failed:
        fetch(f"http://127.0.0.1:{closed_port()}/x")
    assert failed.value.retryable


def test_a_body_over_the_limit_is_refused(server: Server) -> None:
    server.routes["/exact"] = ok(b"z" * 1000)
    server.routes["/big"] = ok(b"z" * 1001, length=False)
    assert fetch(f"{server.url}/exact", max_bytes=1000) == b"z" * 1000
    with pytest.raises(MediaTooLargeError, match=r"larger than 1000 bytes \(SAMQ_WORKER_MAX_MEDIA_BYTES\)"):
        fetch(f"{server.url}/big", max_bytes=1000)


def test_a_content_length_over_the_limit_is_refused_before_reading(server: Server) -> None:
    server.routes["/huge"] = drip_body(server, announce=10**9)
    started = time.monotonic()
    with pytest.raises(MediaTooLargeError, match="SAMQ_WORKER_MAX_MEDIA_BYTES"):
        fetch(f"{server.url}/huge", max_bytes=1000, read_timeout=5.0)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("drip", [drip_body, drip_head])
def test_a_slow_drip_ends_at_the_total_deadline(server: Server, drip: Callable[[Server], Answer]) -> None:
    server.routes["/slow"] = drip(server)
    started = time.monotonic()
    with pytest.raises(MediaFetchError, match=r"longer than 1s to download \(SAMQ_WORKER_FETCH_TOTAL_SECONDS\)"):
        fetch(f"{server.url}/slow", read_timeout=5.0, total_seconds=1.0)
    assert 0.9 < time.monotonic() - started < 2.0


def test_a_silent_server_ends_at_the_read_timeout(server: Server) -> None:
    server.routes["/silent"] = hang(server)
    with pytest.raises(MediaFetchError, match=r"timeout after 0\.3s waiting for the server") as failed:
        fetch(f"{server.url}/silent", read_timeout=0.3)
    assert failed.value.retryable


def test_a_truncated_body_is_transient(server: Server) -> None:
    def short(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100")
        h.end_headers()
        h.wfile.write(b"only ten..")

    server.routes["/short"] = short
    with pytest.raises(MediaFetchError, match="before the body's end"):
        fetch(f"{server.url}/short")


# --- post, for webhooks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [200, 204, 410, 500])
def test_post_returns_the_status(server: Server, code: int) -> None:
    server.routes["/hook"] = status(code)
    outcome = pinned_http.post(
        f"{server.url}/hook",
        b'{"type":"job.succeeded"}',
        {"Content-Type": "application/json", "webhook-id": "msg_1"},
        allowed=LOOPBACK_1,
        connect_timeout=2.0,
        read_timeout=2.0,
    )
    assert (outcome.status, outcome.error) == (code, None)
    assert outcome.ok == (code < 300)
    assert outcome.elapsed_ms > 0
    seen = server.seen[0]
    assert (seen.method, seen.body, seen.user_agent) == ("POST", b'{"type":"job.succeeded"}', "samq")
    assert seen.headers["webhook-id"] == "msg_1"
    assert seen.headers["content-type"] == "application/json"


def test_post_does_not_follow_redirects(server: Server, other_server: Server) -> None:
    other_server.routes["/target"] = status(200)
    server.routes["/hook"] = redirect(f"{other_server.url}/target")
    outcome = post(f"{server.url}/hook")
    assert (outcome.status, outcome.error) == (302, None)
    assert not outcome.ok
    assert server.paths() == ["/hook"]
    assert other_server.seen == []


def test_post_reads_little_of_a_large_response(server: Server) -> None:
    server.routes["/hook"] = ok(b"w" * (8 << 20))
    outcome = post(f"{server.url}/hook")
    assert (outcome.status, outcome.error) == (200, None)


def test_post_reports_a_timeout(server: Server) -> None:
    server.routes["/hook"] = hang(server)
    outcome = post(f"{server.url}/hook", read_timeout=0.3)
    assert outcome.status is None
    assert outcome.error == "timeout after 0.3s waiting for the server"


def test_post_has_a_total_deadline(server: Server) -> None:
    server.routes["/hook"] = drip_head(server)
    started = time.monotonic()
    outcome = post(f"{server.url}/hook", read_timeout=5.0, total_seconds=1.0)
    assert (outcome.status, outcome.error) == (None, "timeout after 1s in all")
    assert time.monotonic() - started < 2.0


def test_post_reports_a_refused_connection() -> None:
    outcome = post(f"http://127.0.0.1:{closed_port()}/hook")
    assert (outcome.status, outcome.error) == (None, "connection refused")


def test_post_reports_a_refused_address_without_connecting(only_loopback: list[object]) -> None:
    outcome = post("http://10.0.0.1/hook", allowed=())
    assert (outcome.status, outcome.error) == (None, "refused: 10.0.0.1 is a private address")
    assert only_loopback == []


def test_post_reports_an_unknown_name() -> None:
    outcome = post("http://nowhere.test/hook", resolver=NAMES)
    assert (outcome.status, outcome.error) == (None, "cannot resolve 'nowhere.test'")


# --- TLS: the certificate is checked against the URL's host, not the pinned address ---------------------------------


@dataclass(frozen=True)
class Tls:
    server: Server
    client: ssl.SSLContext


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[Tls]:
    cert_pem, key_pem, ca_pem = _certificate("pinned.test")
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server = Server(wrap=lambda sock: server_context.wrap_socket(sock, server_side=True))
    server.routes["/"] = ok(b"over tls")
    client = ssl.create_default_context(cadata=ca_pem.decode())
    yield Tls(server, client)
    server.close()


def _certificate(name: str) -> tuple[bytes, bytes, bytes]:
    """A throwaway CA and a server certificate for ``name`` signed by it (PEM: certificate, key, CA)."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject, key, issuer, issuer_key, *, ca):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        )
        if ca:
            usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
            builder = builder.add_extension(usage, critical=True)
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("samq test CA", ca_key, "samq test CA", ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build(name, key, "samq test CA", ca_key, ca=False)
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(pem), key_pem, ca.public_bytes(pem)


def test_https_connects_to_the_pinned_address_and_verifies_the_host_name(tls: Tls) -> None:
    conn = pinned_http.PinnedHTTPSConnection(
        "pinned.test", tls.server.port, IPv4Address("127.0.0.1"), connect_timeout=2, read_timeout=2, context=tls.client
    )
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"over tls")
    finally:
        conn.close()
    assert tls.server.seen[0].host == f"pinned.test:{tls.server.port}"


def test_https_refuses_a_certificate_for_another_name(tls: Tls) -> None:
    conn = pinned_http.PinnedHTTPSConnection(
        "other.test", tls.server.port, IPv4Address("127.0.0.1"), connect_timeout=2, read_timeout=2, context=tls.client
    )
    with pytest.raises(ssl.SSLCertVerificationError, match=r"other\.test"):
        conn.connect()
    conn.close()
    assert tls.server.seen == []


def test_https_fetch_verifies_against_the_system_trust_store(tls: Tls) -> None:
    """``fetch`` uses the default context: a certificate from an unknown CA is a (transient) fetch failure."""
    names = Names(pinned_test=[["127.0.0.1"]])
    with pytest.raises(MediaFetchError, match="certificate verification failed"):
        fetch(f"https://pinned.test:{tls.server.port}/", resolver=names)
    assert names.calls == ["pinned.test"]
