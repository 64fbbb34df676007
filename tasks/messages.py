"""Celery's messages as they sit in Redis: which task, with which keyword arguments.

Celery's Redis transport keeps a queue as a Redis list (producers ``LPUSH``, workers ``BRPOP``) and the messages
workers hold unacknowledged in the ``unacked`` hash (delivery tag → ``[message, exchange, routing key]``), each
delivery's time in the ``unacked_index`` sorted set. A message is Celery's protocol 2 in JSON: the task's name in
``headers.task``, and the body (base64 JSON) ``[args, kwargs, options]``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskCall:
    """What a message asks for: a task by name, with keyword arguments (samq's tasks take no positional ones)."""

    task: str
    kwargs: dict[str, Any]

    @property
    def job_id(self) -> str | None:
        job_id = self.kwargs.get("job_id")
        return job_id if isinstance(job_id, str) else None


def read_call(message: str | bytes | dict[str, Any]) -> TaskCall | None:
    """The call a message makes (a message as JSON, or already parsed); None for anything unreadable."""
    try:
        envelope: dict[str, Any] = message if isinstance(message, dict) else json.loads(message)
        task = envelope["headers"]["task"]
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, *_ = json.loads(body)
        if args and not kwargs:  # a message from a sender that passes the job id positionally
            kwargs = {"job_id": args[0]}
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        return None
    if not isinstance(task, str) or not isinstance(kwargs, dict):
        return None
    return TaskCall(task, kwargs)
