"""Browser pages, no build step: the results viewer (``/view/jobs/{id}``), click-to-segment (``/view/segment``)
and Swagger UI over /openapi.json (``/docs``, from the ``swagger_ui_bundle`` package: nothing from a CDN).

The pages are static files and public; they read everything through the API with the caller's key (taken from
the URL fragment ``#key=…`` or asked for, kept in the tab's sessionStorage, sent as ``Authorization: Bearer``).
Not API routes: /openapi.json does not list them.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle  # type: ignore[import-untyped]
from flask import Blueprint, Response, send_from_directory

from api.errors import ApiError

PAGES = Path(__file__).parent / "static" / "viewer"
SWAGGER_UI = Path(swagger_ui_bundle.swagger_ui_path)
SWAGGER_ASSETS = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-16x16.png", "favicon-32x32.png"})
PREFIXES = ("/view/", "/docs")
"""Public paths (no API key): static pages and assets only."""
SECURITY_HEADERS = {
    "Content-Security-Policy": "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

bp = Blueprint("viewer", __name__, static_folder=PAGES, static_url_path="/view/static")


@bp.get("/view/jobs/<job_id>")
def job_page(job_id: str) -> Response:
    """The viewer of one job (its id is read from the path by the page itself)."""
    return _page("job.html")


@bp.get("/view/segment")
def segment_page() -> Response:
    return _page("segment.html")


@bp.get("/docs")
def docs_page() -> Response:
    return _page("docs.html")


@bp.get("/docs/<name>")
def docs_asset(name: str) -> Response:
    if name not in SWAGGER_ASSETS:
        raise ApiError(404, "not_found", f"no asset {name}")
    return send_from_directory(SWAGGER_UI, name, max_age=3600)


@bp.after_request
def _secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def _page(name: str) -> Response:
    return send_from_directory(PAGES, name, max_age=0)
