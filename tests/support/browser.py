"""Real headless Chromium for the browser pages' tests (Debian's ``chromium`` and ``chromium-driver``; ``.ci/run``
installs them): a driver, waits, canvas read-back, and screenshots for the docs."""

from __future__ import annotations

import base64
import io
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image

os.environ["SE_OFFLINE"] = "true"  # Selenium Manager never goes online for a driver: the system one is used

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = "SAMQ_SCREENSHOT_DIR"
"""Set (e.g. to docs/img) to save the tests' screenshots there."""
MAX_SCREENSHOT_BYTES = 300_000
T = TypeVar("T")


@contextmanager
def chromium(downloads: Path, width: int = 1100, height: int = 1050) -> Iterator[WebDriver]:
    """A headless Chromium that saves downloads into ``downloads`` without asking."""
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.add_argument("--force-color-profile=srgb")  # canvas pixels read back exactly as written
    options.binary_location = CHROMIUM
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(probe: Callable[[], T | None], timeout: float = 60, what: str = "the page") -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def ready(driver: WebDriver, selector: str, attribute: str, value: str | None = None, timeout: float = 60) -> None:
    """Wait until the element ``selector`` has ``data-{attribute}`` (equal to ``value`` when given)."""
    script = "const e = document.querySelector(arguments[0]); return e ? e.dataset[arguments[1]] : null;"

    def probe() -> bool:
        found = driver.execute_script(script, selector, attribute)
        return found is not None and (value is None or found == value)

    wait_until(probe, timeout, f"{selector}[data-{attribute}{'' if value is None else '=' + value}]")


_READ_CANVAS = """
const canvas = arguments[0];
const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
let text = "";
for (let i = 0; i < data.length; i += 0x8000) text += String.fromCharCode.apply(null, data.subarray(i, i + 0x8000));
return [canvas.width, canvas.height, btoa(text)];
"""


def canvas_pixels(driver: WebDriver, canvas: Any) -> npt.NDArray[np.uint8]:
    """The (height, width, 4) RGBA pixels of a canvas element, read back with getImageData."""
    width, height, data = driver.execute_script(_READ_CANVAS, canvas)
    return np.frombuffer(base64.b64decode(data), dtype=np.uint8).reshape(height, width, 4)


def screenshot(driver: WebDriver, name: str) -> Path | None:
    """Save the window as ``{SAMQ_SCREENSHOT_DIR}/{name}.png`` when that is set: a palette PNG, shrunk until it
    is at most MAX_SCREENSHOT_BYTES."""
    folder = os.environ.get(SCREENSHOTS)
    if not folder:
        return None
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.execute_script("window.scrollTo(0, 0)")
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    while True:
        image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        if path.stat().st_size <= MAX_SCREENSHOT_BYTES:
            return path
        image = image.resize((image.width * 9 // 10, image.height * 9 // 10), Image.Resampling.LANCZOS)


def wait_for_download(folder: Path, suffix: str, timeout: float = 30) -> Path:
    """The one finished file named ``*{suffix}`` in ``folder`` (Chromium writes ``.crdownload`` first)."""

    def probe() -> Path | None:
        done = [p for p in folder.glob(f"*{suffix}") if p.is_file()]
        return done[0] if len(done) == 1 else None

    return wait_until(probe, timeout, f"a download *{suffix}")
