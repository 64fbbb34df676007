"""docker-compose.yml as Docker Compose reads it (YAML merge keys, ``${VAR:-default}`` interpolation, environment
entries without a value passed through from the shell or left unset), checked against the code it deploys: every
queue of ``tasks.names.Queue`` has a worker in a plain ``docker compose up``, the workers that may load SAM3 get the
hub token, each GPU worker has a GPU of its own to be put on, and result URLs are presigned for the host.

Docker Compose itself is not installed where the tests run; ``docker compose config -q`` is the check to add where
it is."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # type: ignore[import-untyped]
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from api.settings import ApiSettings
from storage import StorageSettings, make_store
from tasks.names import JOB_TYPES, SAM3_MODEL, Queue, queue_for
from tasks.settings import QueueSettings
from worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {"SAMQ_API_KEYS": "acme:a-long-random-key", "MINIO_ROOT_PASSWORD": "another-long-secret"}
"""The variables docker-compose.yml refuses to start without."""
CPU_TORCH = "https://download.pytorch.org/whl/cpu"


class Reset:
    """Compose's ``!reset`` tag: the attribute is removed from the merged service."""


class ComposeLoader(yaml.SafeLoader):  # type: ignore[misc]
    """YAML as Compose reads it: merge keys (SafeLoader's), and the ``!reset`` tag of override files."""


ComposeLoader.add_constructor("!reset", lambda loader, node: Reset())


def load(name: str, text: str | None = None) -> dict[str, Any]:
    document: dict[str, Any] = yaml.load(text or (ROOT / name).read_text(), Loader=ComposeLoader)
    return document


_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: Any, shell: dict[str, str]) -> Any:
    """Compose's interpolation of ``$${…}``: ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}``; ``$$`` is a literal ``$``."""
    if isinstance(value, dict):
        return {key: interpolate(item, shell) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, shell) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        found = shell.get(name)
        missing = found is None or (found == "" and op is not None and op.startswith(":"))
        if op in (":?", "?") and missing:
            raise KeyError(f"{name}: {arg}")
        if op in (":-", "-") and missing:
            return str(arg)
        return found or ""

    return _VARIABLE.sub(substitute, value)


def services(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services a plain ``docker compose up`` starts: those without a profile."""
    found: dict[str, dict[str, Any]] = document["services"]
    return {name: service for name, service in found.items() if not service.get("profiles")}


def queues(service: dict[str, Any]) -> set[str]:
    """The queues a ``samq worker`` service takes (the CLI's default: all of them); none for other services."""
    command = service.get("command") or []
    if command[:2] != ["samq", "worker"]:
        return set()
    if "--queues" not in command:
        return {queue.value for queue in Queue}
    return {name.strip() for name in command[command.index("--queues") + 1].split(",")}


def container_env(service: dict[str, Any], shell: dict[str, str]) -> dict[str, str]:
    """The environment a container gets: entries without a value come from the shell when set there, else are
    left out."""
    declared: dict[str, Any] = interpolate(service.get("environment") or {}, shell)
    env: dict[str, str] = {}
    for key, value in declared.items():
        if value is not None:
            env[key] = str(value)
        elif key in shell:
            env[key] = shell[key]
    return env


def devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (
        service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    )
    return found


@pytest.fixture
def compose() -> dict[str, Any]:
    return load("docker-compose.yml")


@pytest.fixture
def container(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], None]:
    """Makes a container's environment this process's, as far as settings go: its SAMQ_* variables and no others."""

    def enter(env: dict[str, str]) -> None:
        for key in [key for key in os.environ if key.startswith("SAMQ_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)

    return enter


def test_every_queue_has_a_worker_in_a_plain_compose_up(compose: dict[str, Any]) -> None:
    taken = {name: queues(service) for name, service in services(compose).items()}
    consumed = set().union(*taken.values())

    assert consumed <= {queue.value for queue in Queue}, f"unknown queue names: {taken}"
    orphans = {queue.value for queue in Queue} - consumed
    assert not orphans, f"no worker takes {sorted(orphans)} without a profile: {taken}"
    for job_type in JOB_TYPES:
        for model in ("sam2.1_hiera_tiny", SAM3_MODEL):
            assert queue_for(job_type, model).value in consumed


def test_workers_that_may_load_sam3_get_the_hub_token(
    compose: dict[str, Any], container: Callable[[dict[str, str]], None]
) -> None:
    sam3_queues = {queue_for(job_type, SAM3_MODEL).value for job_type in JOB_TYPES}
    assert sam3_queues >= {Queue.SAM3.value, Queue.VIDEO.value, Queue.BULK.value}
    may_load_sam3 = [name for name, service in services(compose).items() if queues(service) & sam3_queues]
    assert len(may_load_sam3) >= 2

    for name in may_load_sam3:
        service = compose["services"][name]
        with_token = container_env(service, REQUIRED | {"SAMQ_WORKER_HUB_TOKEN": "hf_secret"})
        assert with_token["SAMQ_WORKER_HUB_TOKEN"] == "hf_secret", name
        container(with_token)
        token = WorkerSettings().hub_token
        assert token is not None and token.get_secret_value() == "hf_secret", name
        # Unset in the shell: unset in the container, never an empty token (sent as "Bearer " it would fail even
        # the public SAM2 downloads).
        assert "SAMQ_WORKER_HUB_TOKEN" not in container_env(service, REQUIRED), name
        assert container_env(service, REQUIRED | {"HF_TOKEN": "hf_other"})["HF_TOKEN"] == "hf_other", name


def test_each_gpu_worker_is_pinned_to_a_gpu_of_its_own_choosing(compose: dict[str, Any]) -> None:
    """``count: 1`` would put every worker on GPU 0: each names one device by a variable of its own, so a host with
    several GPUs spreads them, and all default to GPU 0, so a host with one runs them all."""
    gpu_workers = {name: service for name, service in services(compose).items() if devices(service)}
    assert set(gpu_workers) == {name for name, service in services(compose).items() if queues(service) - {"io"}}
    variables: dict[str, str] = {}
    for name, service in gpu_workers.items():
        [device] = devices(service)
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], name
        assert "count" not in device, name
        [device_id] = device["device_ids"]
        [variable] = re.findall(r"\$\{(\w+):-0\}", device_id)
        variables[name] = variable
        assert container_env(service, REQUIRED)["SAMQ_WORKER_DEVICE"] == "cuda", name
    assert len(set(variables.values())) == len(variables) >= 2, variables

    spread = {variable: str(gpu) for gpu, variable in enumerate(variables.values())}
    placed = {name: interpolate(devices(s), REQUIRED | spread)[0]["device_ids"] for name, s in gpu_workers.items()}
    assert sorted(placed.values()) == [[str(gpu)] for gpu in range(len(gpu_workers))]
    defaults = {name: interpolate(devices(s), REQUIRED)[0]["device_ids"] for name, s in gpu_workers.items()}
    assert set(map(tuple, defaults.values())) == {("0",)}


def test_the_api_and_workers_presign_result_urls_for_the_host(
    compose: dict[str, Any], container: Callable[[dict[str, str]], None]
) -> None:
    presigning = {
        name: service
        for name, service in services(compose).items()
        if queues(service) or service.get("build", {}).get("target") == "api"
    }
    assert {"api", "worker-io"} <= set(presigning)
    [published] = [port for port in compose["services"]["minio"]["ports"] if port.endswith(":9000")]

    for shell, public in [
        (REQUIRED, f"http://localhost:{published.split(':')[-2]}"),
        (REQUIRED | {"S3_PUBLIC_ENDPOINT_URL": "https://s3.example.org"}, "https://s3.example.org"),
    ]:
        for name, service in presigning.items():
            container(container_env(service, shell))
            settings = StorageSettings()
            assert settings.backend == "s3", name
            assert settings.s3_public_endpoint_url == public, name
            assert urlsplit(settings.s3_endpoint_url or "").hostname in compose["services"], name
            url = make_store(settings).presign_get("acme/jobs/j1/masks/0.png", 60).url
            assert url.startswith(f"{public}/samq/acme/jobs/j1/masks/0.png?"), (name, url)


def _env_names(settings: type[BaseSettings]) -> set[str]:
    prefix = str(settings.model_config.get("env_prefix", ""))
    names = set()
    for field_name, field in settings.model_fields.items():
        names.add(f"{prefix}{field_name}".upper())
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {str(choice).upper() for choice in alias.choices}
        elif isinstance(alias, str):
            names.add(alias.upper())
    return names


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.cpu.yml"])
def test_every_samq_setting_named_exists(name: str) -> None:
    classes: tuple[type[BaseSettings], ...] = (StorageSettings, WorkerSettings, QueueSettings, ApiSettings)
    known = set().union(*(_env_names(settings) for settings in classes))
    named = {key for service in load(name)["services"].values() for key in service.get("environment") or {}}
    unknown = {key for key in named if key.startswith("SAMQ_")} - known
    assert not unknown, f"{name} sets settings samq does not have: {sorted(unknown)}"


def test_the_cpu_override_takes_every_gpu_worker_off_the_gpu(compose: dict[str, Any]) -> None:
    cpu = load("docker-compose.cpu.yml")
    gpu_workers = {name for name, service in compose["services"].items() if devices(service)}
    assert set(cpu["services"]) == gpu_workers
    for name, override in cpu["services"].items():
        assert isinstance(override["deploy"], Reset), name
        assert override["environment"]["SAMQ_WORKER_DEVICE"] == "cpu", name
        assert override["build"]["args"]["TORCH_INDEX_URL"] == CPU_TORCH, name
        assert override["image"] == compose["services"]["worker-io"]["image"], name
    assert "TORCH_INDEX_URL" not in compose["services"]["worker-io"]["build"].get("args", {})


def test_the_documented_extra_gpu_service_works_as_written(compose: dict[str, Any]) -> None:
    """The commented example at the end of the services, uncommented in place: valid, pinned, a worker."""
    text = (ROOT / "docker-compose.yml").read_text()
    lines = text.splitlines()
    start = lines.index("  # worker-interactive-2:")
    end = lines.index("volumes:")
    example = ["  " + line.removeprefix("  # ") for line in lines[start:end] if line.startswith("  # ")]
    extended = load("", "\n".join([*lines[:end], *example, *lines[end:]]))

    extra = extended["services"]["worker-interactive-2"]
    assert queues(extra) == {Queue.INTERACTIVE.value, Queue.SAM3.value}
    assert devices(extra)[0]["device_ids"] == ["2"] and devices(extra)[0]["driver"] == "nvidia"
    assert container_env(extra, REQUIRED) == container_env(compose["services"]["worker-interactive"], REQUIRED)
    assert extra["image"] == compose["services"]["worker-interactive"]["image"]


def test_a_lone_worker_container_takes_every_queue() -> None:
    """The worker image's own command (``docker run samq-worker``): every queue, none left without a worker."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    worker_stage = dockerfile[dockerfile.index("AS worker") :]
    [command] = [json.loads(line[len("CMD ") :]) for line in worker_stage.splitlines() if line.startswith("CMD ")]
    assert queues({"command": command}) == {queue.value for queue in Queue}
