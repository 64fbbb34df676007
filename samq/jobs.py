"""A job as the client holds it: the API's job object (a dict, field for field) that refreshes itself, waits with
progress, cancels, and reads, downloads and converts its results."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urljoin

from samq.errors import JobFailed, SamqError, WaitTimeout
from samq.progress import JobProgress

if TYPE_CHECKING:  # the optional extra: imported where a conversion is asked for (samq.detections)
    import supervision as sv

TERMINAL = frozenset({"succeeded", "failed", "canceled"})


class JobSource(Protocol):
    """What a job needs of its client (``samq.Client``)."""

    base_url: str

    def request(self, method: str, path: str) -> Any: ...

    def fetch(self, url: str) -> bytes: ...

    def download(self, url: str, path: Path) -> Path: ...


class Job(dict[str, Any]):
    """The job object of ``GET /v1/jobs/{id}`` (``job["status"]``, ``job["result"]``, … as API.md names them), with
    methods. It holds the state of its last refresh: :meth:`refresh` and :meth:`wait` update it in place."""

    def __init__(self, data: Mapping[str, Any], client: JobSource) -> None:
        super().__init__(data)
        self._client = client

    @property
    def id(self) -> str:
        return str(self["id"])

    @property
    def status(self) -> str:
        return str(self["status"])

    @property
    def done(self) -> bool:
        """Ended: succeeded, failed or canceled."""
        return self.status in TERMINAL

    @property
    def summary(self) -> dict[str, Any]:
        """The result's summary (``{}`` before the job succeeded)."""
        return dict((self.get("result") or {}).get("summary") or {})

    @property
    def view_url(self) -> str | None:
        """The results viewer's page of this job (an absolute URL), where the server links one."""
        view = self.get("view")
        return urljoin(self._client.base_url + "/", view) if isinstance(view, str) else None

    def refresh(self) -> Job:
        self._replace(self._client.request("GET", f"/v1/jobs/{self.id}"))
        return self

    def wait(
        self,
        timeout: float | None = None,
        *,
        interval: float = 0.25,
        max_interval: float = 2.0,
        on_update: Callable[[Job], None] | None = None,
        progress: bool = False,
    ) -> Job:
        """Poll until the job ended and return it (whatever the outcome: see :meth:`raise_for_status`).

        Polls every ``interval`` seconds while the job moves, backing off to ``max_interval`` while it does not (an
        hour of video is not polled four times a second). ``on_update`` sees the job at every poll; ``progress`` draws
        a progress bar on stderr (a plain line per change when stderr is not a terminal). Raises
        :class:`WaitTimeout` after ``timeout`` seconds; the job goes on.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        display = JobProgress(sys.stderr) if progress else None
        pause, seen = interval, None
        try:
            while True:
                if on_update is not None:
                    on_update(self)
                if display is not None:
                    display.update(self)
                if self.done:
                    return self
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(f"job {self.id} still {self.status} after {timeout:g} s")
                state = (self.status, self["progress"].get("done"))
                pause, seen = (interval if state != seen else min(pause * 1.5, max_interval)), state
                time.sleep(pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic())))
                self.refresh()
        finally:
            if display is not None:
                display.close()

    def cancel(self) -> Job:
        """Ask the server to cancel (a queued job ends at once, a running one at its next checkpoint)."""
        self._replace(self._client.request("POST", f"/v1/jobs/{self.id}/cancel"))
        return self

    def raise_for_status(self) -> Job:
        """This job if it succeeded; :class:`JobFailed` (with the job's ``error.code``) if it failed or was canceled;
        :class:`SamqError` if it has not ended."""
        if not self.done:
            raise SamqError(f"job {self.id} is {self.status}: wait() for it first")
        if self.status != "succeeded":
            raise JobFailed(self.id, self.status, self.get("error"))
        return self

    @property
    def files(self) -> dict[str, str]:
        """Result file name → its URL (presigned: fetch it without the API key)."""
        return {file["name"]: file["url"] for file in (self.get("result") or {}).get("files", [])}

    def read(self, name: str) -> bytes:
        """One result file's bytes (``result.json``, ``tracks.jsonl``, ``coco.json``, ``annotated.png``, …)."""
        files = self.raise_for_status().files
        if name not in files:
            raise SamqError(f"job {self.id} has no result file {name!r} (it has {', '.join(sorted(files))})")
        return self._client.fetch(files[name])

    def result(self) -> Any:
        """The result document (``result.json``): instances, or a batch's counts and failures."""
        self.raise_for_status()
        return self._client.request("GET", f"/v1/jobs/{self.id}/result")

    def download(self, out: str | Path, names: Sequence[str] | None = None) -> list[Path]:
        """Write the result files (all, or ``names``) under the directory ``out``, keeping their relative paths."""
        files = self.raise_for_status().files
        written = []
        for name in names if names is not None else sorted(files):
            target = Path(out) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            written.append(self._client.download(files[name], target))
        return written

    def tracks(self) -> Iterator[dict[str, Any]]:
        """A track job's ``tracks.jsonl``, one frame's record at a time."""
        for line in self.read("tracks.jsonl").splitlines():
            if line.strip():
                yield json.loads(line)

    def coco(self) -> dict[str, Any]:
        """A batch's COCO instances file (``export: ["coco"]``)."""
        document: dict[str, Any] = json.loads(self.read("coco.json"))
        return document

    def to_detections(self) -> sv.Detections:
        """A segment, concept or everything result as supervision's ``sv.Detections`` (``pip install supervision``):
        masks, xyxy, confidence, class_id (the position in the job's category table) and ``data["class_name"]``."""
        from samq import detections

        if self["type"] not in ("segment", "concept", "everything"):
            hint = {"track": "frames()", "batch": "item_detections() or to_dataset()"}.get(self["type"], "result()")
            raise SamqError(f"a {self['type']} job's result is not one image's detections: see Job.{hint}")
        return detections.from_result(self.result(), self.read)

    def frames(self) -> Iterator[tuple[int, sv.Detections]]:
        """A track job's ``(frame, sv.Detections)`` pairs with ``tracker_id`` the object's id, streamed from
        ``tracks.jsonl`` (one frame's masks in memory at a time)."""
        from samq import detections

        return detections.track_frames(self.tracks())

    def item_detections(self) -> dict[str, sv.Detections]:
        """A batch's COCO export as item name (the COCO ``file_name``) → ``sv.Detections``."""
        from samq import detections

        return detections.from_coco(self.coco())

    def to_dataset(self, images_dir: str | Path) -> sv.DetectionDataset:
        """A batch's COCO export as ``sv.DetectionDataset``, its images read from ``images_dir`` (where the items'
        names, the COCO file names, resolve)."""
        from samq import detections

        return detections.dataset(self.coco(), Path(images_dir))

    def _replace(self, data: Mapping[str, Any]) -> None:
        self.clear()
        self.update(data)
