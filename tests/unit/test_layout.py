"""The code base's shape: no god files. (Import directions and cycles are import-linter's contracts in
pyproject.toml, run by ``.ci/run``.)"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("samq", "api", "worker", "tasks", "storage", "bench", "tests")
MAX_MODULE_LINES = 450


def test_no_module_is_over_450_lines() -> None:
    paths = sorted(path for folder in FOLDERS for path in (ROOT / folder).rglob("*.py"))
    assert len(paths) > 100, "the folders moved: update FOLDERS"
    sizes = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in paths}
    too_long = {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert not too_long, f"split these along their seams: {too_long}"


def test_test_files_have_unique_names() -> None:
    """The test folders are not packages: pytest imports each test file by its name alone, so two with one name
    stop the whole run at collection."""
    names = [path.name for path in (ROOT / "tests").rglob("test_*.py")]
    assert len(names) > 50
    assert not {name for name in names if names.count(name) > 1}
