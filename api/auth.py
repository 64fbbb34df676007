"""API keys → tenants. Keys are kept only as SHA-256 digests; with no keys the server runs open (one tenant)."""

from __future__ import annotations

import hashlib
import ipaddress

from api.errors import ApiError

OPEN_TENANT = "default"


class Tenants:
    def __init__(self, keys: str) -> None:
        self._by_digest: dict[str, str] = {}
        for pair in filter(None, (item.strip() for item in keys.split(","))):
            tenant, sep, key = pair.partition(":")
            if not sep or not tenant or not key:
                raise ValueError("SAMQ_API_KEYS must be comma-separated tenant:key pairs")
            self._by_digest[_digest(key)] = tenant

    @property
    def open(self) -> bool:
        return not self._by_digest

    def resolve(self, authorization: str | None) -> str:
        """The caller's tenant from an ``Authorization: Bearer <key>`` header; 401 otherwise."""
        if self.open:
            return OPEN_TENANT
        scheme, _, key = (authorization or "").partition(" ")
        tenant = self._by_digest.get(_digest(key.strip())) if scheme.lower() == "bearer" else None
        if tenant is None:
            raise ApiError(401, "unauthorized", "a valid 'Authorization: Bearer <api key>' header is required")
        return tenant


def check_binding(host: str, tenants: Tenants) -> None:
    """Refuse to serve an open (keyless) API on anything but a loopback address."""
    if not tenants.open:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise SystemExit(f"refusing to bind {host} without API keys: set SAMQ_API_KEYS or bind 127.0.0.1")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
