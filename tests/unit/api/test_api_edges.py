from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.auth import OPEN_TENANT, Tenants, check_binding
from api.errors import ApiError


def test_open_mode_has_one_tenant_and_only_binds_loopback() -> None:
    tenants = Tenants("")
    assert tenants.open
    assert tenants.resolve(None) == OPEN_TENANT
    check_binding("127.0.0.1", tenants)
    check_binding("::1", tenants)
    with pytest.raises(SystemExit, match="SAMQ_API_KEYS"):
        check_binding("0.0.0.0", tenants)


def test_keys_map_to_tenants_and_bad_keys_are_401() -> None:
    tenants = Tenants("acme:k1, globex:k2")
    assert tenants.resolve("Bearer k1") == "acme"
    assert tenants.resolve("bearer k2") == "globex"
    for header in (None, "", "Bearer", "Bearer k3", "Basic k1", "k1"):
        with pytest.raises(ApiError) as caught:
            tenants.resolve(header)
        assert caught.value.status == 401
    check_binding("0.0.0.0", tenants)
    with pytest.raises(ValueError, match="tenant:key"):
        Tenants("acme")


def test_the_api_never_imports_torch_or_model_code(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from api.app import create_app\n"
        "from api.services import build_services\n"
        "from tasks.settings import QueueSettings\n"
        "create_app(build_services(queue=QueueSettings(redis_url='redis://127.0.0.1:1/0')))\n"
        "print(sorted(m for m in ('torch', 'sam2', 'torchvision', 'cv2') if m in sys.modules))\n"
    )
    env = {**os.environ, "SAMQ_STORAGE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, env=env)
    assert out.stdout.strip() == "[]"
