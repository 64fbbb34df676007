"""The SAM3 concept section, on its own ``samq worker --queues sam3`` (``SAMQ_IMAGE_SIZE`` = ``--image-size``).

Timings per phrase count (a first job on a fresh image, which encodes it, then an identical second one that hits
the in-process embedding cache), the memory test (:mod:`bench.concept_memory`), and the released SAM3's time per
image on a GPU when the machine has one and the weights are here.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.concept_memory import MemoryTest, measure_memory, print_memory_note, print_memory_rows
from bench.jobs import (
    CONCEPT_THRESHOLD,
    IMAGE_H,
    IMAGE_W,
    PHRASES,
    WAIT_SECONDS,
    ConceptTimed,
    concept_job,
    run_concept,
    synthetic_jpeg,
    upload,
)
from bench.report import load_average, ms, print_table_head, verdict
from bench.stacks import REPO, worker
from samq.client import Client
from tasks.names import Queue
from tests.support.stack import Stack
from worker.settings import WorkerSettings
from worker.weights import local_pretrained_dir

META_H200_MS = 30.0  # Meta's SAM3 release: 30 ms per image (100+ detected objects) on an H200


@dataclass(frozen=True)
class ConceptOptions:
    image_size: int
    repeats: int
    phrase_counts: list[int]
    memory: MemoryTest | None
    """``None``: ``--no-memory``."""


@dataclass
class Timings:
    """Per phrase count, the first (encoding) and second (cache hit) job of every fresh image."""

    firsts: dict[int, list[ConceptTimed]]
    seconds: dict[int, list[ConceptTimed]]

    def raw(self) -> dict[str, Any]:
        return {
            str(count): {
                "first": [t.raw() for t in self.firsts[count]],
                "second": [t.raw() for t in self.seconds[count]],
            }
            for count in self.firsts
        }


def measure_concept(options: ConceptOptions, stack: Stack, hw: dict[str, Any]) -> dict[str, Any]:
    """Timings, memory and the GPU row; prints the table, returns the raw numbers."""
    from worker.runners.sam3 import PATCH_SIZE, shrunk_concept_config  # torch and transformers: only when measuring

    client = Client(stack.api_url, timeout=WAIT_SECONDS + 10)
    size = options.image_size - options.image_size % PATCH_SIZE
    num_queries = int(getattr(shrunk_concept_config(size).detr_decoder_config, "num_queries", 0))
    print_header(options, hw, size, num_queries, PATCH_SIZE)
    raw: dict[str, Any] = {
        "settings": {
            "image_size": options.image_size,
            "sam3_input_size": size,
            "num_queries": num_queries,
            "random_weights": True,
            "repeats": options.repeats,
            "phrase_counts": options.phrase_counts,
            "threshold": CONCEPT_THRESHOLD,
        }
    }
    timings = measure_timings(client, stack, options)
    raw["timings"] = timings.raw()
    memory: dict[str, Any] | None = None
    if options.memory is not None:
        memory = raw["memory"] = measure_memory(client, stack, options.memory, options.image_size, num_queries)
    gpu = gpu_row(client, stack, hw, options.repeats)
    raw["gpu"] = gpu
    print()
    print_table_head("Concept results")
    print_timing_rows(timings, options)
    if memory is not None:
        print_memory_rows(memory)
    print_gpu_row(gpu)
    print()
    if memory is not None:
        print_memory_note(memory)
    if not gpu["measured"]:
        print(f"GPU row not measured: {gpu['reason']}.")
    print(
        f"Load average (1/5/15 min) at the end: {load_average()}. Random weights: speed is the shrunk architecture's, "
        "not the released model's; with threshold 0.5 the random heads keep few or no instances, so the per-phrase "
        "time holds little mask upsampling."
    )
    print(flush=True)
    return raw


def print_header(options: ConceptOptions, hw: dict[str, Any], size: int, num_queries: int, patch: int) -> None:
    print("## SAM3 concept")
    print()
    print(
        f"- settings: model sam3, SHRUNK architecture with RANDOM weights (SAMQ_RANDOM_WEIGHTS=1: every part a few "
        f"layers of 32–64 channels, {num_queries} queries per phrase), input {size} px (SAMQ_IMAGE_SIZE="
        f"{options.image_size}, rounded down to a multiple of {patch}); one worker --queues sam3 (prefork, "
        f"concurrency 1), device auto → {'cuda' if hw['cuda_device'] else 'cpu'}"
    )
    print(
        f"- timed jobs: {options.repeats} fresh synthetic {IMAGE_W}×{IMAGE_H} JPEGs per phrase count "
        f"{options.phrase_counts}, phrases from {list(PHRASES)} in order, threshold {CONCEPT_THRESHOLD}, "
        "max_detections 100; each image gets a first job (encode: miss) then a second, identical one (memory hit)"
    )
    print(f"- load average (1/5/15 min) at start: {load_average()}")
    print(flush=True)


def measure_timings(client: Client, stack: Stack, options: ConceptOptions) -> Timings:
    """One sam3 worker; a warm-up job loads the model, then fresh images, two jobs each."""
    timings = Timings({count: [] for count in options.phrase_counts}, {count: [] for count in options.phrase_counts})
    with worker(stack, [Queue.SAM3], {"SAMQ_IMAGE_SIZE": str(options.image_size)}):
        warm_upload = upload(client, synthetic_jpeg(seed=1000))
        t0 = time.perf_counter()
        warm = run_concept(client, concept_job(warm_upload, [PHRASES[0]]), expect="miss")
        run_concept(client, concept_job(warm_upload, [PHRASES[0]]), expect="memory")
        print(
            f"concept warm-up: model load + encode + detect {ms((time.perf_counter() - t0) * 1000)} "
            f"(worker {ms(warm.total_ms)})",
            flush=True,
        )
        seed = 1001
        for repeat in range(options.repeats):
            for count in options.phrase_counts:
                phrases = list(PHRASES[:count])
                fresh = upload(client, synthetic_jpeg(seed))
                seed += 1
                timings.firsts[count].append(run_concept(client, concept_job(fresh, phrases), expect="miss"))
                timings.seconds[count].append(run_concept(client, concept_job(fresh, phrases), expect="memory"))
            print(f"concept timings: round {repeat + 1}/{options.repeats}", flush=True)
    return timings


def print_timing_rows(timings: Timings, options: ConceptOptions) -> None:
    n = options.repeats
    encodes = [t.encode_ms for count in options.phrase_counts for t in timings.firsts[count]]
    print(
        f"| concept: image encode (first job on an image, miss) | {ms(statistics.median(encodes))} "
        f"(median of {len(encodes)}) | | |"
    )
    for count in options.phrase_counts:
        first, second = timings.firsts[count], timings.seconds[count]
        label = f"concept, {count} phrase{'s' if count > 1 else ''}"
        kept = "/".join(str(k) for k in sorted({t.instances for t in first + second}))
        per_phrase = statistics.median(t.per_phrase_ms for t in first)
        detect = statistics.median(t.detect_ms for t in first)
        print(
            f"| {label}: detect per phrase (detect_ms / {count}) | {ms(per_phrase)} (median of {n}; detect_ms "
            f"{ms(detect)}; instances kept: {kept}) | | |"
        )
        first_total = statistics.median(t.total_ms for t in first)
        second_total = statistics.median(t.total_ms for t in second)
        print(
            f"| {label}: first job (miss), worker / e2e | {ms(first_total)} / "
            f"{ms(statistics.median(t.e2e_ms for t in first))} (median of {n}) | | |"
        )
        print(
            f"| {label}: second job, same image (memory hit), worker / e2e | {ms(second_total)} / "
            f"{ms(statistics.median(t.e2e_ms for t in second))} (median of {n}; detect "
            f"{ms(statistics.median(t.detect_ms for t in second))}) | | |"
        )
        print(f"| {label}: second / first (worker time) | {second_total / first_total:.3f} | | |")


def gpu_row(client: Client, stack: Stack, hw: dict[str, Any], repeats: int) -> dict[str, Any]:
    """The released SAM3 on the GPU (bf16 autocast, as the worker runs it there): model time per image, when a GPU
    AND the released weights (a checkpoint folder; the hub repository is gated, nothing is downloaded) are here."""
    folder = local_pretrained_dir("sam3", WorkerSettings(random_weights=False))
    folder = folder if folder.is_absolute() else REPO / folder
    has_weights = (folder / "config.json").is_file()
    weights_note = (
        f"the released weights are in {folder}"
        if has_weights
        else f"the released weights (facebook/sam3, gated) are not here either: no checkpoint folder {folder} "
        "(SAMQ_WORKER_MODELS_DIR), and none can be downloaded on this machine"
    )
    if not hw["cuda_device"]:
        return {"measured": False, "reason": f"no CUDA device (torch.cuda.is_available() is false); {weights_note}"}
    if not has_weights:
        return {
            "measured": False,
            "reason": f"a CUDA device ({hw['cuda_device']}) is here but {weights_note}; random weights would time "
            "the shrunk model, not the released one",
        }
    env = {"SAMQ_WORKER_DEVICE": "cuda", "SAMQ_WORKER_ALLOW_DOWNLOAD": "false"}
    firsts: list[ConceptTimed] = []
    with worker(stack, [Queue.SAM3], env, unset=("SAMQ_RANDOM_WEIGHTS", "SAMQ_IMAGE_SIZE")):
        first_upload = upload(client, synthetic_jpeg(seed=3000))
        run_concept(client, concept_job(first_upload, [PHRASES[0]]), expect="miss")  # model load, CUDA warm-up
        for seed in range(3001, 3004):  # more warm-up: cuDNN/cuBLAS autotuning on fresh inputs
            run_concept(client, concept_job(upload(client, synthetic_jpeg(seed)), [PHRASES[0]]), None)
        for seed in range(3100, 3100 + repeats):
            fresh = upload(client, synthetic_jpeg(seed))
            firsts.append(run_concept(client, concept_job(fresh, [PHRASES[0]]), expect="miss"))
    per_image = statistics.median(t.model_ms for t in firsts)
    print(f"concept GPU: {len(firsts)} fresh images, model time per image {ms(per_image)}", flush=True)
    return {
        "measured": True,
        "device": hw["cuda_device"],
        "weights": str(folder),
        "repeats": len(firsts),
        "per_image_ms": per_image,
        "jobs": [t.raw() for t in firsts],
    }


def print_gpu_row(gpu: dict[str, Any]) -> None:
    if gpu["measured"]:
        ok = gpu["per_image_ms"] <= META_H200_MS
        print(
            f"| concept GPU: full-size SAM3, bf16 autocast, model time per image (encode + 1 phrase) "
            f"| {ms(gpu['per_image_ms'])} (median of {gpu['repeats']}; {gpu['device']}) "
            f"| ≤ {META_H200_MS:.0f} ms (Meta, H200) | {verdict(ok)} |"
        )
    else:
        print(
            "| concept GPU: full-size SAM3, bf16, time per image | not measured (see below) "
            f"| ≤ {META_H200_MS:.0f} ms (Meta, H200) | n/a |"
        )
