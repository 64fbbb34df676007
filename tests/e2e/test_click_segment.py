"""Click to segment (``/view/segment``) in a real headless Chromium against a real stack: the image is uploaded and
embedded once, each click runs one segment job on its ``image_id`` that refines the previous answer
(``mask_input``), and the mask on screen and its exports are the last job's."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.conftest import VIEWER_KEYS, Api
from tests.support.browser import canvas_pixels, ready, screenshot, wait_for_download, wait_until
from tests.support.images import png_bytes, scene
from tests.support.stack import Stack

KEY = VIEWER_KEYS["clicker"]
WIDTH, HEIGHT = 320, 240


@pytest.fixture(scope="module")
def client(pages_stack: Stack) -> Api:
    return Api(pages_stack.api_url, KEY)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "scene.png"
    path.write_bytes(png_bytes(scene(WIDTH, HEIGHT)))
    return path


def open_with_image(driver: WebDriver, stack: Stack, image: Path, key: str = KEY) -> None:
    driver.get(f"{stack.api_url}/view/segment#key={key}")
    driver.find_element(By.ID, "file").send_keys(str(image))
    ready(driver, "#stage", "embed", timeout=120)


def click(driver: WebDriver, x: float, y: float, *, right: bool = False) -> None:
    """A real mouse click on the centre of image pixel (x, y) as displayed (the page sends fractional pixels)."""
    target = driver.find_element(By.CSS_SELECTOR, "#stage canvas.marks")
    width, height = target.size["width"], target.size["height"]
    offset = round((x + 0.5) / WIDTH * width - width / 2), round((y + 0.5) / HEIGHT * height - height / 2)
    actions = ActionChains(driver).move_to_element_with_offset(target, *offset)
    (actions.context_click() if right else actions.click()).perform()


def refreshes(driver: WebDriver, count: int) -> list[str]:
    """Wait until ``count`` refreshes are listed; their job ids, newest first."""

    def listed() -> list[str] | None:
        rows = driver.find_elements(By.CSS_SELECTOR, "#history tr")
        return [row.get_attribute("data-job") or "" for row in rows] if len(rows) == count else None

    return wait_until(listed, 120, f"{count} refreshes")


def shown_mask(driver: WebDriver) -> Any:
    return canvas_pixels(driver, driver.find_element(By.CSS_SELECTOR, "#stage canvas.masks"))[..., 3] > 0


def job_mask(client: Api, job_id: str) -> Any:
    rle = client.get(f"/v1/jobs/{job_id}/result")["instances"][0]["rle"]
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def test_two_clicks_run_two_segment_jobs_the_second_refining_the_first(
    pages_stack: Stack, client: Api, browser: WebDriver, image: Path
) -> None:
    open_with_image(browser, pages_stack, image)
    click(browser, 128, 120)
    first_id = refreshes(browser, 1)[0]
    click(browser, 260, 60, right=True)
    second_id, first_again = refreshes(browser, 2)
    assert first_again == first_id

    segments = client.get("/v1/jobs?type=segment&limit=100")["data"]
    assert [job["id"] for job in segments] == [second_id, first_id]  # one job per click, no more
    assert all(job["status"] == "succeeded" for job in segments)
    embeds = client.get("/v1/jobs?type=embed&limit=100")["data"]
    assert len(embeds) == 1  # the image was embedded once
    # What each job ran with, as stored (GET /v1/jobs/{id}/input answers the stored spec).
    first, second = (client.get(f"/v1/jobs/{job_id}/input")["request"] for job_id in (first_id, second_id))
    image_id = hashlib.sha256(image.read_bytes()).hexdigest()
    assert first["image"] == second["image"] == {"image_id": image_id}
    assert first["prompts"][0]["mask_input"] is None
    assert second["prompts"][0]["mask_input"] == {"job": first_id, "index": 0}
    points = [(p["x"], p["y"], p["positive"]) for p in second["prompts"][0]["points"]]
    assert [(int(x), int(y), positive) for x, y, positive in points] == [(128, 120, True), (260, 60, False)]

    mask = job_mask(client, second_id)
    assert mask.any() and not mask.all()
    assert (shown_mask(browser) == mask).all()  # the mask on screen is the second job's, pixel for pixel
    latencies = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#history td.ms")]
    assert all(text.endswith(" ms") and int(text.split()[0]) > 0 for text in latencies), latencies
    screenshot(browser, "click-to-segment")


def test_the_mask_on_screen_exports_as_png_rle_and_coco(
    pages_stack: Stack, browser: WebDriver, image: Path, downloads: Path
) -> None:
    client = Api(pages_stack.api_url, VIEWER_KEYS["exporter"])
    open_with_image(browser, pages_stack, image, VIEWER_KEYS["exporter"])
    ActionChains(browser).drag_and_drop_by_offset(  # drag a box
        browser.find_element(By.CSS_SELECTOR, "#stage canvas.marks"), 60, 40
    ).perform()
    job_id = refreshes(browser, 1)[0]
    box = client.get(f"/v1/jobs/{job_id}/input")["request"]["prompts"][0]
    assert box["points"] == [] and box["box"]["x1"] - box["box"]["x0"] > 10
    mask = job_mask(client, job_id)

    browser.find_element(By.ID, "export-png").click()
    png = np.asarray(Image.open(wait_for_download(downloads, "-mask.png")).convert("L"))
    assert ((png > 127) == mask).all()
    browser.find_element(By.ID, "export-rle").click()
    rle = json.loads(wait_for_download(downloads, ".rle.json").read_text())
    assert rle == client.get(f"/v1/jobs/{job_id}/result")["instances"][0]["rle"]
    browser.find_element(By.ID, "export-coco").click()
    coco = COCO(str(wait_for_download(downloads, "-coco.json")))
    (annotation,) = coco.loadAnns(coco.getAnnIds())
    assert coco.loadImgs(annotation["image_id"])[0] | {"id": 0} == {
        "id": 0, "file_name": image.name, "width": WIDTH, "height": HEIGHT
    }  # fmt: skip
    assert (coco.annToMask(annotation).astype(bool) == mask).all()
