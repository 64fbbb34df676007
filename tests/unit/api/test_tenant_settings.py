"""Tenants and their limits: API keys from the variable and a file, per-tenant limit overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.auth import Tenants
from api.settings import ApiSettings, TenantLimits


def test_api_keys_come_from_the_variable_and_a_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nvision:k-vision\n\n  ops:k-ops  \n")
    tenants = Tenants("acme:k1", str(keys))
    assert [tenants.resolve(f"Bearer {k}") for k in ("k1", "k-vision", "k-ops")] == ["acme", "vision", "ops"]
    with pytest.raises(ValueError, match="SAMQ_API_KEYS_FILE"):
        Tenants("", str(tmp_path / "missing"))
    for bad in ("../etc:k", "a/b:k", "a b:k", "t:", ":k"):
        with pytest.raises(ValueError, match="tenant:key"):
            Tenants(bad)


def test_tenant_limits_override_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMQ_API_RATE_PER_SECOND", "7")
    monkeypatch.setenv("SAMQ_API_TENANT_LIMITS", '{"vision": {"max_queued_jobs": 5000}}')
    settings = ApiSettings()
    assert settings.limits_for("vision") == TenantLimits(rate_per_second=7, rate_burst=100, max_queued_jobs=5000)
    assert settings.limits_for("other") == TenantLimits(rate_per_second=7, rate_burst=100, max_queued_jobs=1000)
    monkeypatch.setenv("SAMQ_API_TENANT_LIMITS", '{"vision": {"rate_per_second": 0}}')
    with pytest.raises(ValueError, match="greater than 0"):
        ApiSettings()
