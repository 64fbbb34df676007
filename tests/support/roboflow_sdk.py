"""Roboflow's real ``inference-sdk`` client, run as a user runs it: in its own environment (``.venv-roboflow``,
made by ``scripts/install.sh --dev`` from ``requirements/roboflow-client.txt``), in a process of its own.

The tests call :func:`run_sdk` with a list of client method calls; this file, run by the client environment's
Python, makes them with ``InferenceHTTPClient`` and prints each outcome as JSON: the method's return value, or
the SDK's exception (its type, ``status_code`` and ``api_message``, what the user's code would see).
Only the standard library is imported at the top: the two environments share nothing else.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CLIENT_PYTHON = ROOT / ".venv-roboflow" / "bin" / "python"


def run_sdk(
    api_url: str, calls: list[dict[str, Any]], api_key: str | None = None, transport: str | None = None
) -> list[dict[str, Any]]:
    """``calls``: ``{"method": "sam2_segment_image", "kwargs": {...}}`` each; ``transport``: the client's
    ``api_key_transport`` (None: its default, the key in the JSON body for a self-hosted server; ``header``:
    ``Authorization: Bearer``). Returns ``{"result": …}`` or ``{"error": {"type", "status_code", "api_message"}}``
    per call, in order."""
    if not CLIENT_PYTHON.exists():
        raise RuntimeError(f"{CLIENT_PYTHON} is missing: run `bash scripts/install.sh --dev` (it makes .venv-roboflow)")
    request = {"api_url": api_url, "api_key": api_key, "transport": transport, "calls": calls}
    done = subprocess.run(
        [str(CLIENT_PYTHON), __file__],
        input=json.dumps(request).encode(),
        capture_output=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the inference-sdk process failed ({done.returncode}):\n{done.stderr.decode()[-4000:]}")
    outcomes: list[dict[str, Any]] = json.loads(done.stdout)
    return outcomes


def _client_main() -> None:
    """In the client's environment: make the calls read from stdin, print their outcomes."""
    from inference_sdk import InferenceConfiguration, InferenceHTTPClient
    from inference_sdk.http.errors import HTTPCallErrorError

    request = json.load(sys.stdin)
    client = InferenceHTTPClient(api_url=request["api_url"], api_key=request["api_key"])
    if request["transport"] is not None:
        client.configure(InferenceConfiguration(api_key_transport=request["transport"]))
    outcomes: list[dict[str, Any]] = []
    for call in request["calls"]:
        try:
            outcomes.append({"result": getattr(client, call["method"])(**call["kwargs"])})
        except HTTPCallErrorError as e:
            error = {"type": type(e).__name__, "status_code": e.status_code, "api_message": e.api_message}
            outcomes.append({"error": error})
    json.dump(outcomes, sys.stdout)


if __name__ == "__main__":
    _client_main()
