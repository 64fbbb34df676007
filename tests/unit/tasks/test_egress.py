"""The SSRF guard (``tasks.egress``): hostile URLs are refused before any socket, by every entry point."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest

from storage.local import LocalStore
from tasks import egress
from tasks.errors import (
    MediaFetchError,
    MediaNotFoundError,
    UnresolvableHostError,
    UrlRefusedError,
)
from tasks.settings import QueueSettings
from tasks.specs import UrlImage
from tests.support.loopback import NAMES, fetch, post
from worker.pipeline.media import MediaSource
from worker.pipeline.objects import JobObjects

LOOPBACK_1 = (IPv4Network("127.0.0.1/32"),)
PUBLIC = "93.184.215.14"


# --- hostile URLs ---------------------------------------------------------------------------------------------------

HOSTILE = [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address (the cloud metadata"),
    ("http://127.0.0.1:6379/", "127.0.0.1 is a loopback address"),
    ("http://[::1]/", "::1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]/", "of 127.0.0.1, which is a loopback address"),
    ("http://2130706433/", "127.0.0.1 is a loopback address"),
    ("http://0x7f.1/", "127.0.0.1 is a loopback address"),
    ("http://017700000001/", "127.0.0.1 is a loopback address"),
    ("http://127.1:8080/", "127.0.0.1 is a loopback address"),
    ("http://metadata.test/", "metadata.test: 127.0.0.1 is a loopback address"),
    ("http://10.0.0.1/", "10.0.0.1 is a private address"),
    ("http://172.16.0.1/", "172.16.0.1 is a private address"),
    ("http://192.168.1.1/", "192.168.1.1 is a private address"),
    ("http://100.64.0.1/", "100.64.0.1 is a carrier-grade NAT address"),
    ("http://100.100.100.200/", "carrier-grade NAT"),  # Alibaba Cloud's metadata address
    ("http://0.0.0.0/", "0.0.0.0 is an unspecified address"),
    ("http://0/", "0.0.0.0 is an unspecified address"),
    ("http://0.1.2.3/", "0.1.2.3 is a 'this network' address"),
    ("http://224.0.0.1/", "224.0.0.1 is a multicast address"),
    ("http://255.255.255.255/", "the broadcast address"),
    ("http://240.0.0.1/", "a reserved address"),
    ("http://198.18.0.1/", "a benchmarking address"),
    ("http://192.0.2.1/", "a documentation address"),
    ("http://[fe80::1]/", "fe80::1 is a link-local address"),
    ("http://[fc00::1]/", "fc00::1 is a private (unique local) address"),
    ("http://[fd00:ec2::254]/", "private (unique local)"),  # AWS's IPv6 metadata address
    ("http://[fec0::1]/", "fec0::1 is a site-local address"),
    ("http://[ff02::1]/", "a multicast address"),
    ("http://[::]/", ":: is an unspecified address"),
    ("http://[::127.0.0.1]/", "an IPv4-compatible form of 127.0.0.1, which is a loopback address"),
    ("http://[::ffff:169.254.169.254]/", "the cloud metadata service"),
    ("http://[::ffff:10.0.0.1]/", "10.0.0.1, which is a private address"),
    ("http://[2002:7f00:1::]/", "a 6to4 form of 127.0.0.1, which is a loopback address"),
    ("http://[2002:a9fe:a9fe::]/", "a 6to4 form of 169.254.169.254"),
    ("http://[64:ff9b::a00:1]/", "a NAT64 form of 10.0.0.1, which is a private address"),
    ("http://[64:ff9b:1::a00:1]/", "a local-use NAT64 address"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "a Teredo address"),
    ("http://[2001:db8::1]/", "a documentation address"),
    ("http://[100::1]/", "a discard-only address"),
    ("http://[4000::1]/", "outside 2000::/3"),
    ("http://mixed.test/", "mixed.test: 10.0.0.1 is a private address"),
    ("file:///etc/passwd", "is not an http(s) URL"),
    ("gopher://127.0.0.1:6379/_INFO", "is not an http(s) URL"),
    ("ftp://public.test/", "is not an http(s) URL"),
    ("http:///no-host", "has no host"),
    ("http://public.test:99999/", "is not a valid URL"),
    ("http://public.test:0/", "has an invalid port"),
    ("http://user:secret@public.test/", "credentials"),
    ("http://public.test/\r\nX-Injected: 1", "control characters"),
]


@pytest.mark.parametrize(("url", "reason"), HOSTILE)
def test_check_url_refuses_hostile_urls(url: str, reason: str) -> None:
    with pytest.raises(UrlRefusedError) as refused:
        egress.check_url(url, (), NAMES)
    assert reason in refused.value.message
    assert refused.value.code == "url_refused"


@pytest.mark.parametrize(("url", "reason"), HOSTILE)
def test_fetch_refuses_hostile_urls_without_connecting(url: str, reason: str) -> None:
    with pytest.raises(UrlRefusedError) as refused:
        fetch(url, allowed=(), resolver=NAMES)
    assert reason in refused.value.message


@pytest.mark.parametrize(("url", "reason"), HOSTILE)
def test_post_refuses_hostile_urls_without_connecting(url: str, reason: str) -> None:
    outcome = post(url, allowed=(), resolver=NAMES)
    assert outcome.status is None
    assert outcome.error is not None
    assert outcome.error.startswith("refused: ")
    assert reason in outcome.error


def test_literal_spellings_are_normalised_by_the_system_resolver() -> None:
    for spelling in ("2130706433", "0x7f.1", "017700000001", "127.1", "0x7f000001"):
        with pytest.raises(UrlRefusedError, match=r"127\.0\.0\.1 is a loopback address"):
            egress.resolve(spelling, 80, ())


def test_the_reason_names_the_address_and_its_kind() -> None:
    assert egress.forbidden_reason(IPv4Address("127.0.0.1"), ()) == "127.0.0.1 is a loopback address"
    assert egress.forbidden_reason(IPv4Address("10.0.0.1"), ()) == "10.0.0.1 is a private address"
    assert egress.forbidden_reason(IPv6Address("::1"), ()) == "::1 is a loopback address"


@pytest.mark.parametrize(
    "address",
    [
        IPv4Address(PUBLIC),
        IPv4Address("8.8.8.8"),
        IPv4Address("1.1.1.1"),
        IPv6Address("2606:2800:21f:cb07:6820:80da:af6b:8b2c"),
        IPv6Address(f"::ffff:{PUBLIC}"),  # IPv4-mapped public
        IPv6Address("2002:5db8:d70e::"),  # 6to4 of a public address
        IPv6Address(f"64:ff9b::{PUBLIC}"),  # NAT64 of a public address
    ],
)
def test_public_addresses_are_allowed(address: egress.Address) -> None:
    assert egress.forbidden_reason(address, ()) is None


def test_a_name_with_only_public_addresses_resolves() -> None:
    assert egress.resolve("public.test", 443, (), NAMES) == [IPv4Address(PUBLIC)]
    egress.check_url("https://public.test/image.png", (), NAMES)


def test_the_allow_list_exempts_its_networks_only() -> None:
    allowed = (IPv4Network("10.0.0.0/8"),)
    assert egress.forbidden_reason(IPv4Address("10.1.2.3"), allowed) is None
    assert egress.forbidden_reason(IPv6Address("::ffff:10.1.2.3"), allowed) is None  # embedded: same rules
    assert egress.forbidden_reason(IPv4Address("192.168.1.1"), allowed) == "192.168.1.1 is a private address"
    assert egress.forbidden_reason(IPv4Address("10.1.2.3"), (IPv4Network("10.2.0.0/16"),)) is not None
    assert egress.forbidden_reason(IPv6Address("fd00::1"), (IPv6Network("fd00::/8"),)) is None


def test_the_allow_list_comes_from_samq_allow_private_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMQ_ALLOW_PRIVATE_URLS", "10.0.0.0/8, fd00::/8")
    allowed = QueueSettings().allowed_networks
    egress.check_url("http://10.1.2.3:8080/x", allowed)
    egress.check_url("http://[fd00::1]/x", allowed)
    with pytest.raises(UrlRefusedError):
        egress.check_url("http://172.16.0.1/x", allowed)


def test_an_unknown_name_is_its_own_error() -> None:
    with pytest.raises(UnresolvableHostError) as missing:
        egress.check_url("http://nowhere.test/", (), NAMES)
    assert isinstance(missing.value, MediaNotFoundError)
    assert missing.value.code == "media_not_found"


def test_a_temporary_dns_failure_is_transient() -> None:
    def flaky(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(MediaFetchError) as failed:
        egress.check_url("http://flaky.test/", (), flaky)
    assert failed.value.retryable


def test_media_source_refuses_through_egress(tmp_path: Path) -> None:
    objects = JobObjects(LocalStore(tmp_path, "http://localhost", b"k" * 32))
    media = MediaSource(objects, None, max_bytes=1000, timeout=1.0, total_seconds=2.0)
    with pytest.raises(UrlRefusedError, match="loopback"):
        media.fetch(UrlImage(url="http://127.0.0.1:6379/"), "tenant")
