"""The results viewer (``/view/jobs/{id}``) and the API docs page (``/docs``) in a real headless Chromium, against
a real stack with API keys: what the canvas shows is compared with the job's own result, decoded by pycocotools.
With random weights the masks are arbitrary but deterministic, so nothing here expects a shape."""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from pycocotools import mask as mask_utils
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from api.viewer import SWAGGER_UI
from tests.e2e.conftest import VIEWER_KEYS, Api
from tests.support.browser import canvas_pixels, ready, screenshot, wait_until
from tests.support.images import png_bytes, scene
from tests.support.stack import Stack
from tests.support.videos import Shape, moving_shapes, write_clip

KEY = VIEWER_KEYS["viewer"]
Mask = npt.NDArray[np.bool_]


@pytest.fixture(scope="module")
def client(pages_stack: Stack) -> Api:
    return Api(pages_stack.api_url, KEY)


def open_view(driver: WebDriver, stack: Stack, path: str) -> None:
    """Open a page as a user given a link with the key in its fragment."""
    driver.get(f"{stack.api_url}{path}#key={KEY}")


def decode(rle: dict[str, Any]) -> Mask:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def assert_masks_drawn(pixels: npt.NDArray[np.uint8], masks: list[Mask], colours: list[tuple[int, ...]]) -> None:
    """Every pixel of the masks (drawn in order, later on top) has its mask's colour; every other pixel is clear."""
    union = np.logical_or.reduce(masks)
    assert union.any() and not union.all(), "a mask that covers nothing or everything proves little"
    alpha = pixels[..., 3]
    assert (alpha[union] > 0).all(), f"{int((alpha[union] == 0).sum())} mask pixels are not drawn"
    assert (alpha[~union] == 0).all(), f"{int((alpha[~union] > 0).sum())} pixels outside the masks are drawn"
    top = np.full(union.shape, -1)
    for index, mask in enumerate(masks):
        top[mask] = index
    for index, colour in enumerate(colours):
        drawn = pixels[top == index][:, :3].astype(int)
        if len(drawn):  # premultiplied alpha rounds a little
            assert np.abs(drawn - np.array(colour)).max() <= 3, (index, colour, drawn[:3])


def legend_colours(driver: WebDriver) -> dict[str, tuple[int, ...]]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#legend li.instance")
    return {
        row.get_attribute("data-key") or "": tuple(int(v) for v in (row.get_attribute("data-rgb") or "").split(","))
        for row in rows
    }


def masks_canvas(driver: WebDriver, within: str = "#view") -> Any:
    return driver.find_element(By.CSS_SELECTOR, f"{within} .stage canvas.masks")


def segment_job(client: Api) -> dict[str, Any]:
    upload = client.upload(png_bytes(scene()), "image/png")
    prompts = [
        {"points": [{"x": 128, "y": 120}, {"x": 20, "y": 20, "positive": False}], "label": "ellipse"},
        {"box": {"x0": 230, "y0": 30, "x1": 300, "y1": 90}, "label": "rectangle"},
    ]
    job = client.submit({"type": "segment", "image": {"upload": upload}, "prompts": prompts})
    assert job["status"] == "succeeded", job
    return job


def test_the_rle_decoder_matches_pycocotools(pages_stack: Stack, browser: WebDriver) -> None:
    """Masks of every kind (empty, full, one pixel, thin, noise, long runs that take several characters and
    negative differences) decode in the page exactly as pycocotools decodes them; malformed counts throw."""
    rng = np.random.default_rng(7)
    masks = [
        np.zeros((5, 7), bool),
        np.ones((6, 4), bool),
        np.ones((1, 1), bool),
        np.zeros((1, 9), bool) | (np.arange(9) % 2 == 0),
        rng.random((40, 1)) > 0.5,
        rng.random((37, 53)) > 0.5,
        rng.random((64, 48)) > 0.97,
    ]
    big = np.zeros((1200, 1500), bool)
    big[100:1100, 20:1400] = True
    big[500:510, 600:610] = False
    masks.append(big)
    rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    payload = [{"size": r["size"], "counts": r["counts"].decode()} for r in rles]
    browser.get(f"{pages_stack.api_url}/view/segment")
    decoded, errors = browser.execute_async_script(
        """
        const [rles, done] = arguments;
        import("./static/rle.js").then(({ decodeMask }) => {
          const out = rles.map((rle) => {
            const mask = decodeMask(rle);
            let text = "";
            for (const v of mask) text += String.fromCharCode(v);
            return btoa(text);
          });
          const bad = [{ size: [2, 2], counts: "5" }, { size: [2, 2], counts: "0" }, { size: [2, 2], counts: "2 " }];
          const errors = bad.map((rle) => { try { decodeMask(rle); return null; } catch (e) { return e.message; } });
          done([out, errors]);
        });
        """,
        payload,
    )
    for mask, data in zip(masks, decoded, strict=True):
        page = np.frombuffer(base64.b64decode(data), np.uint8).reshape(mask.shape).astype(bool)
        assert (page == mask).all(), mask.shape
    assert all(errors), errors  # too many pixels, too few, a character outside the alphabet


def test_the_viewer_draws_a_segment_jobs_masks_where_its_rle_says(
    pages_stack: Stack, client: Api, browser: WebDriver
) -> None:
    job = segment_job(client)
    assert job["view"] == f"/view/jobs/{job['id']}"
    document = client.get(f"/v1/jobs/{job['id']}/result")
    masks = [decode(instance["rle"]) for instance in document["instances"]]

    open_view(browser, pages_stack, job["view"])
    ready(browser, "#view", "ready", "image")

    assert browser.execute_script("return location.hash") == ""  # the key left the address bar
    assert browser.execute_script("return sessionStorage.getItem('samq.apiKey')") == KEY
    colours = legend_colours(browser)
    assert list(colours) == ["0", "1"]
    assert_masks_drawn(canvas_pixels(browser, masks_canvas(browser)), masks, list(colours.values()))
    tags = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#view .labels .tag")]
    assert tags[0].startswith("#0 ellipse ") and tags[1].startswith("#1 rectangle ")
    marks = canvas_pixels(browser, browser.find_element(By.CSS_SELECTOR, "#view canvas.marks"))
    assert marks[120, 128, 3] > 0 and marks[20, 20, 3] > 0  # the points
    assert (marks[30:91, 229:232, 3] > 0).mean() > 0.3 and (marks[89:92, 230:301, 3] > 0).mean() > 0.3  # the box
    assert (marks[50:70, 250:280, 3] == 0).all()  # (outlined, not filled)
    media = browser.find_element(By.CSS_SELECTOR, "#view img.media")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", media) == 320
    screenshot(browser, "viewer-image")

    browser.find_element(By.CSS_SELECTOR, '#legend li[data-key="1"] input').click()  # hide instance 1
    assert_masks_drawn(canvas_pixels(browser, masks_canvas(browser)), masks[:1], [colours["0"]])
    assert len(browser.find_elements(By.CSS_SELECTOR, "#view .labels .tag")) == 1


def test_a_job_that_kept_only_polygons_is_drawn_from_them(pages_stack: Stack, client: Api, browser: WebDriver) -> None:
    """Polygons (boundary-pixel centres, lossy) are filled; the result is close to the same job's RLE."""
    upload = client.upload(png_bytes(scene()), "image/png")
    body = {"type": "segment", "image": {"upload": upload}, "prompts": [{"points": [{"x": 128, "y": 120}]}]}
    exact = client.submit(body)
    polygons = client.submit(body | {"output": {"formats": ["polygon"]}})
    assert "rle" not in client.get(f"/v1/jobs/{polygons['id']}/result")["instances"][0]
    mask = decode(client.get(f"/v1/jobs/{exact['id']}/result")["instances"][0]["rle"])

    open_view(browser, pages_stack, polygons["view"])
    ready(browser, "#view", "ready", "image")
    drawn = canvas_pixels(browser, masks_canvas(browser))[..., 3] > 0
    assert mask.any() and (drawn & mask).sum() / (drawn | mask).sum() > 0.9


def test_an_everything_jobs_masks_are_drawn_with_one_legend_row_each(
    pages_stack: Stack, client: Api, browser: WebDriver
) -> None:
    upload = client.upload(png_bytes(scene(seed=35)), "image/png")
    params = {"points_per_side": 4, "pred_iou_thresh": 0, "stability_score_thresh": 0, "box_nms_thresh": 1}
    job = client.submit({"type": "everything", "image": {"upload": upload}, **params, "max_masks": 3})
    assert job["status"] == "succeeded", job
    masks = [decode(instance["rle"]) for instance in client.get(f"/v1/jobs/{job['id']}/result")["instances"]]
    assert len(masks) == 3

    open_view(browser, pages_stack, job["view"])
    ready(browser, "#view", "ready", "image")
    assert list(legend_colours(browser)) == ["0", "1", "2"]
    drawn = canvas_pixels(browser, masks_canvas(browser))[..., 3] > 0
    union = np.logical_or.reduce(masks)
    assert union.any() and (drawn == union).all()


WIDTH, HEIGHT = 128, 96
SHAPES = [
    Shape(colour=(220, 40, 40), size=(30, 24), start=(8, 10), velocity=(2.0, 1.0), label="red box"),
    Shape(colour=(40, 200, 60), size=(26, 26), start=(90, 60), velocity=(-1.5, -0.5), kind="ellipse", label="disc"),
]


def test_a_track_jobs_frame_shows_its_objects_ids_and_masks(
    pages_stack: Stack, client: Api, browser: WebDriver, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.mp4"
    write_clip(clip, (frame for frame, _ in moving_shapes(12, WIDTH, HEIGHT, SHAPES)), fps=10)
    video = client.upload(clip.read_bytes(), "video/mp4")
    objects = [
        {"id": 3, "label": "red box", "box": {"x0": 8, "y0": 10, "x1": 38, "y1": 34}},
        {"id": 8, "label": "disc", "box": {"x0": 90, "y0": 60, "x1": 116, "y1": 86}},
    ]
    job = client.submit({"type": "track", "model": "sam2.1_hiera_tiny", "video": {"upload": video}, "objects": objects})
    assert job["status"] == "succeeded", job
    tracks_url = next(f["url"] for f in job["result"]["files"] if f["name"] == "tracks.jsonl")
    with urllib.request.urlopen(tracks_url) as response:
        lines = [json.loads(line) for line in response.read().splitlines()]
    frame = 7
    line = next(line for line in lines if line["frame"] == frame)

    open_view(browser, pages_stack, job["view"])
    ready(browser, "#view", "ready", "track")
    number = browser.find_element(By.ID, "frame-number")
    number.clear()
    number.send_keys(str(frame), Keys.TAB)
    ready(browser, "#view", "frame", str(frame))

    ids = [str(o["id"]) for o in line["objects"]]
    assert ids, "frame 7 has objects"
    assert list(legend_colours(browser)) == ids
    assert [t.text.split()[0] for t in browser.find_elements(By.CSS_SELECTOR, "#view .labels .tag")] == [
        f"#{i}" for i in ids
    ]
    assert f"frame {frame} " in browser.find_element(By.ID, "frame-caption").text
    masks = [decode(o["mask"]) for o in line["objects"]]
    assert_masks_drawn(canvas_pixels(browser, masks_canvas(browser)), masks, list(legend_colours(browser).values()))
    video_state = browser.execute_script(
        "const v = document.querySelector('#view video'); "
        "return [v.classList.contains('unavailable'), v.readyState, v.currentTime];"
    )
    assert video_state[0] is False and video_state[1] >= 2, video_state  # Chromium plays the H.264 upload
    assert video_state[2] == pytest.approx(line["time"] + 0.05, abs=0.01)  # the middle of frame 7
    screenshot(browser, "viewer-track")


def test_a_batch_gallery_pages_its_items_and_shows_a_failed_items_error_code(
    pages_stack: Stack, client: Api, browser: WebDriver
) -> None:
    items = [
        {"upload": client.upload(png_bytes(scene(seed=i)), "image/png"), "name": f"scene-{i}.png"} for i in range(3)
    ]
    items.append({"upload": client.upload(b"not an image at all", "image/png"), "name": "broken.png"})
    template = {"type": "segment", "prompts": [{"points": [{"x": 128, "y": 120}]}]}
    batch = client.submit({"type": "batch", "template": template, "inputs": {"items": items}, "max_failure_rate": 1})
    document = client.get(f"/v1/jobs/{batch['id']}/result")
    assert (document["succeeded"], document["failed"]) == (3, 1), document
    code = document["failures"][0]["error"]["code"]

    open_view(browser, pages_stack, f"{batch['view']}?per=3")
    ready(browser, "#view", "ready", "batch")
    figures = browser.find_elements(By.CSS_SELECTOR, "#gallery figure")
    assert [f.get_attribute("data-status") for f in figures] == ["succeeded"] * 3
    assert "scene-0.png" in figures[0].text
    first = client.get(f"/v1/jobs/{batch['id']}/items/0")
    colour = browser.execute_script("return getComputedStyle(arguments[0]).backgroundColor", _tag(figures[0]))
    rgb = tuple(int(v) for v in re.findall(r"\d+", colour)[:3])
    pixels = canvas_pixels(browser, figures[0].find_element(By.CSS_SELECTOR, "canvas.masks"))
    assert_masks_drawn(pixels, [decode(first["instances"][0]["rle"])], [rgb])

    browser.find_element(By.ID, "next-page").click()
    ready(browser, "#gallery", "page", "2")
    failed = browser.find_element(By.CSS_SELECTOR, "#gallery figure")
    assert failed.get_attribute("data-status") == "failed" and "broken.png" in failed.text
    assert failed.find_element(By.CSS_SELECTOR, ".error-code").text == code
    assert "page=2" in browser.current_url

    open_view(browser, pages_stack, batch["view"])  # all four on one page, for the docs
    ready(browser, "#view", "ready", "batch")
    screenshot(browser, "viewer-batch")


def _tag(figure: Any) -> Any:
    return figure.find_element(By.CSS_SELECTOR, ".labels .tag")


def test_the_input_route_links_a_jobs_own_media_and_request_only(pages_stack: Stack, client: Api) -> None:
    job = segment_job(client)
    answer = client.get(f"/v1/jobs/{job['id']}/input")
    assert answer["request"]["prompts"][0]["label"] == "ellipse"
    assert answer["media"]["content_type"] == "image/png"
    with urllib.request.urlopen(answer["media"]["url"]) as response:  # presigned: no key needed
        assert response.read() == png_bytes(scene())
    other = Api(pages_stack.api_url, VIEWER_KEYS["other"]).http
    for path in (f"/v1/jobs/{job['id']}/input", f"/v1/jobs/{job['id']}/input?item=0"):
        refused = other.get(path)
        assert (refused.status_code, refused.json()["error"]["code"]) == (404, "job_not_found")
    not_batch = client.http.get(f"/v1/jobs/{job['id']}/input?item=0")
    assert (not_batch.status_code, not_batch.json()["error"]["code"]) == (404, "item_not_found")
    assert client.http.get(f"/v1/jobs/{job['id']}/input?item=-1").status_code == 422
    assert client.http.get(f"/v1/jobs/{job['id']}/input").status_code == 200
    assert httpx.get(f"{pages_stack.api_url}/v1/jobs/{job['id']}/input").status_code == 401  # the route needs a key
    cached = client.submit({"type": "segment", "image": {"image_id": job["result"]["summary"]["image_id"]}})
    assert client.get(f"/v1/jobs/{cached['id']}/input")["media"] is None  # an image_id: nothing to link


def test_docs_serves_swagger_ui_from_the_package_without_external_urls(pages_stack: Stack, browser: WebDriver) -> None:
    with urllib.request.urlopen(f"{pages_stack.api_url}/docs") as response:
        page = response.read().decode()
        assert response.headers["Content-Type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and not [a for a in assets if re.match(r"(?:[a-z]+:)?//", a)], assets
    for asset in assets:
        with urllib.request.urlopen(f"{pages_stack.api_url}/{asset}") as response:
            body = response.read()
        if asset.startswith("docs/"):
            assert body == (SWAGGER_UI / asset.removeprefix("docs/")).read_bytes()
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{pages_stack.api_url}/docs/index.html")  # only the assets the page uses
    assert caught.value.code == 404

    browser.get(f"{pages_stack.api_url}/docs")
    ready(browser, "body", "ready", "docs")
    document = json.loads(urllib.request.urlopen(f"{pages_stack.api_url}/openapi.json").read())
    operations = sum(len(item) for item in document["paths"].values())
    wait_until(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".opblock")) == operations, 30, "every operation")
    origins = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => new URL(e.name).origin)"
    )
    assert set(origins) == {pages_stack.api_url}, origins  # nothing fetched from anywhere else
    screenshot(browser, "api-docs")
