"""Per-request access to the app's services and the caller's tenant."""

from __future__ import annotations

from typing import cast

from flask import current_app, g

from api.services import Services


def services() -> Services:
    return cast(Services, current_app.extensions["samq"])


def tenant() -> str:
    return cast(str, g.tenant)
