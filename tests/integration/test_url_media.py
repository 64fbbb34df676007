"""Images fetched by URL: served by a real HTTP server on loopback (allow-listed for the shared stack only)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from samq.errors import ApiError
from tests.support.images import png_bytes, scene
from tests.support.stack import Stack

IMAGE = png_bytes(scene())


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/scene.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(IMAGE)))
            self.end_headers()
            self.wfile.write(IMAGE)
        elif self.path == "/redirect":  # to another loopback address, outside the stack's allow-list
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.2:{self.server.server_address[1]}/scene.png")  # type: ignore[index]
            self.end_headers()
        else:
            self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def media_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def job(url: str) -> dict[str, object]:
    return {"type": "segment", "image": {"url": url}, "prompts": [{"points": [{"x": 100, "y": 100}]}]}


def test_an_image_url_is_fetched_and_segmented(local_stack: Stack, media_server: str) -> None:
    done = local_stack.client.submit(job(f"{media_server}/scene.png"), wait=60)
    assert done["status"] == "succeeded", done["error"]
    assert local_stack.client.result(done["id"])["image"]["width"] == 320


def test_a_missing_url_fails_with_media_not_found(local_stack: Stack, media_server: str) -> None:
    done = local_stack.client.submit(job(f"{media_server}/missing.png"), wait=60)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "media_not_found"


def test_a_redirect_to_a_refused_address_is_refused(local_stack: Stack, media_server: str) -> None:
    done = local_stack.client.submit(job(f"{media_server}/redirect"), wait=60)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "url_refused"
    assert "127.0.0.2" in done["error"]["message"]


LOOPBACK_FORMS = [
    "http://127.0.0.1:6379/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://017700000001/",
    "http://127.1/",
    "http://localhost/",
    "http://0.0.0.0/",
    "http://[::]/",
]


@pytest.mark.parametrize("url", LOOPBACK_FORMS)
def test_loopback_urls_are_refused_at_submit_unless_allow_listed(bare_stack: Stack, url: str) -> None:
    """Loopback forms only end to end (a broken guard must never reach a real host); tests/unit/test_egress.py
    checks the other ranges (metadata, private, CGNAT, …) against the guard with connections patched to fail."""
    with pytest.raises(ApiError) as caught:
        bare_stack.client.submit(job(url))
    assert caught.value.status == 422
    assert caught.value.body["error"]["code"] == "url_refused"
    assert caught.value.body["error"]["details"][0]["field"] == "image.url"
