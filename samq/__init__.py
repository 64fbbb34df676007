"""samq: an asynchronous Segment Anything service. From Python: ``from samq import Client`` (see README)."""

from samq.client import Client
from samq.errors import ApiError, JobFailed, SamqError, WaitTimeout
from samq.jobs import Job

__all__ = ["ApiError", "Client", "Job", "JobFailed", "SamqError", "WaitTimeout"]
