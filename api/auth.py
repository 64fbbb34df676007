"""API keys → tenants. Keys are kept only as SHA-256 digests; with no keys the server runs open (one tenant)."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from pathlib import Path

from api.errors import ApiError
from api.settings import ApiSettings

OPEN_TENANT = "default"
TENANT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Tenant names become storage key prefixes: nothing that could escape one."""


class Tenants:
    """``keys``: comma-separated ``tenant:key`` pairs (``SAMQ_API_KEYS``); ``keys_file``: one pair per line."""

    def __init__(self, keys: str, keys_file: str = "") -> None:
        self._by_digest: dict[str, str] = {}
        pairs = [item.strip() for item in keys.split(",")]
        if keys_file:
            try:
                lines = Path(keys_file).read_text().splitlines()
            except OSError as e:
                raise ValueError(f"SAMQ_API_KEYS_FILE: cannot read {keys_file}: {e}") from e
            pairs += [line.strip() for line in lines if not line.lstrip().startswith("#")]
        for pair in filter(None, pairs):
            tenant, sep, key = pair.partition(":")
            if not sep or not TENANT_NAME.fullmatch(tenant) or not key.strip():
                raise ValueError(
                    "API keys must be tenant:key pairs (SAMQ_API_KEYS, SAMQ_API_KEYS_FILE); "
                    "tenant names are 1-64 letters, digits, '-' or '_'"
                )
            self._by_digest[_digest(key.strip())] = tenant

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> Tenants:
        return cls(settings.keys.get_secret_value(), settings.keys_file)

    @property
    def open(self) -> bool:
        return not self._by_digest

    def resolve(self, authorization: str | None) -> str:
        """The caller's tenant from an ``Authorization: Bearer <key>`` header; 401 otherwise."""
        scheme, _, key = (authorization or "").partition(" ")
        return self.resolve_key(
            key.strip() if scheme.lower() == "bearer" else None,
            "a valid 'Authorization: Bearer <api key>' header is required",
        )

    def resolve_key(self, key: str | None, required: str) -> str:
        """The tenant of ``key``; 401 with the message ``required`` when it names none."""
        if self.open:
            return OPEN_TENANT
        tenant = None if key is None else self._by_digest.get(_digest(key))
        if tenant is None:
            raise ApiError(401, "unauthorized", required)
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
