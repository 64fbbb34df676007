from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import redis

from samq.embedded import redis_server
from tasks.batch_store import BatchStore
from tasks.broker import connect
from tasks.settings import QueueSettings
from tests.support.moto_server import moto_s3_server
from tests.support.races import BATCH_TTL, LONG_LEASE, SHORT_LEASE
from tests.support.stack import Stack, local_storage_env, s3_storage_env, stack_env

BUCKET = "samq-test"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint:
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=BUCKET)
        yield endpoint


def _stack(root: Path, storage: dict[str, str]) -> Iterator[Stack]:
    with redis_server(root / "redis", appendonly=False) as redis_url:
        stack = Stack(redis_url, stack_env(redis_url, storage), logs=root)
        try:
            stack.start_api()
            yield stack
        finally:
            stack.stop()


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """API + one worker on every queue, local storage. Shared by the tests that do not kill workers."""
    root = tmp_path_factory.mktemp("local-stack")
    trusted = {"SAMQ_ALLOW_PRIVATE_URLS": "127.0.0.1/32"}  # the tests' own HTTP server serves media on loopback
    for stack in _stack(root, {**local_storage_env(root / "objects"), **trusted}):
        stack.start_worker()
        yield stack


TENANT_KEYS = {"alpha": "key-alpha", "beta": "key-beta", "slow": "key-slow", "quota": "key-quota"}
TENANT_LIMITS = {"slow": {"rate_per_second": 0.5, "rate_burst": 3}, "quota": {"max_queued_jobs": 1}}
PRESIGN_SECONDS = 3


@pytest.fixture(scope="session")
def tenant_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """API keys for several tenants (some with tight limits), short-lived presigned URLs, one worker."""
    root = tmp_path_factory.mktemp("tenant-stack")
    env = {
        **local_storage_env(root / "objects"),
        "SAMQ_ALLOW_PRIVATE_URLS": "127.0.0.1/32",  # the tests' webhook receivers and media servers
        "SAMQ_API_KEYS": ",".join(f"{tenant}:{key}" for tenant, key in TENANT_KEYS.items()),
        "SAMQ_API_TENANT_LIMITS": json.dumps(TENANT_LIMITS),
        "SAMQ_STORAGE_PRESIGN_SECONDS": str(PRESIGN_SECONDS),
    }
    for stack in _stack(root, env):
        stack.start_worker()
        yield stack


@pytest.fixture(scope="session")
def s3_stack(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("s3-stack")
    for stack in _stack(root, s3_storage_env(s3_endpoint, BUCKET)):
        stack.start_worker()
        yield stack


@pytest.fixture
def bare_stack(tmp_path: Path) -> Iterator[Stack]:
    """API and Redis of its own, no worker yet: for tests that start, kill and restart workers."""
    yield from _stack(tmp_path, local_storage_env(tmp_path / "objects"))


@pytest.fixture
def trusting_stack(tmp_path: Path) -> Iterator[Stack]:
    """A bare stack whose workers may call loopback URLs (the tests' own webhook receivers and media servers)."""
    env = {**local_storage_env(tmp_path / "objects"), "SAMQ_ALLOW_PRIVATE_URLS": "127.0.0.1/32"}
    yield from _stack(tmp_path, env)


@pytest.fixture
def rate_limited_stack(tmp_path: Path) -> Iterator[Stack]:
    """No worker; the API allows 1 request a second, in bursts of 2."""
    env = {"SAMQ_API_RATE_PER_SECOND": "1", "SAMQ_API_RATE_BURST": "2"}
    yield from _stack(tmp_path, local_storage_env(tmp_path / "objects") | env)


@pytest.fixture
def waiting_stack(tmp_path: Path) -> Iterator[Stack]:
    """No worker yet; Roboflow-compatible calls wait 2 s, two at a time."""
    env = {**local_storage_env(tmp_path / "objects"), "SAMQ_API_ROBOFLOW_WAIT_SECONDS": "2"}
    yield from _stack(tmp_path, env | {"SAMQ_API_ROBOFLOW_MAX_WAITING": "2"})


# ---- a private Redis for the store tests ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of the test module's own (no AOF: nothing to keep)."""
    with redis_server(tmp_path_factory.mktemp("redis"), appendonly=False) as url:
        yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of ``redis_url``, emptied before each test."""
    client = connect(QueueSettings(redis_url=redis_url))
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def batch_store(redis_client: redis.Redis) -> BatchStore:
    return BatchStore(redis_client, BATCH_TTL, LONG_LEASE)


@pytest.fixture
def short_batch_store(redis_client: redis.Redis) -> BatchStore:
    """The same Redis state, but whatever this store claims lapses after SHORT_LEASE seconds."""
    return BatchStore(redis_client, BATCH_TTL, SHORT_LEASE)
