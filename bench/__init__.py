"""samq benchmark: our overhead on a cache-hit segment job, the embedding cache, SAM3 concepts, SAM2 video tracking.

Starts a private stack in a temporary directory (redis-server, ``samq api``, one ``samq worker --queues
interactive``), on the production code path, then measures the issue's two acceptance criteria:

(a) a segment job on an image whose embedding is cached in the worker (model warm), timed end to end from the client
    (``POST /v1/jobs`` with ``Prefer: wait=30`` until the 200 carrying the finished job), minus the model's own time
    (``summary.timings.model_ms``: the prompt decoder on a hit) = "our overhead"; next to a bare Celery no-op round trip
    (``Dispatcher.ping``) on the same Redis and the same worker. The two series are interleaved, each round with an
    HTTP no-op (``GET /healthz``). Targets: overhead p50 ≤ 25 ms and ≤ 1.5× the bare round trip's p50; and ≤ 2× the
    floor, the HTTP no-op's p50 + the bare round trip's p50 (issue 17). Beside it, the job's own work
    (``bench/own_work.py``): each part a cache-hit job must add to the floor, timed alone in one process.
(b) the worker time (``summary.timings.total_ms``) of a second segment job on the same image, over the first's (which
    runs the image encoder). Target: ≤ 0.10.

Then the SAM3 concept section, on its own ``samq worker --queues sam3`` (started after the segment section, with
``SAMQ_IMAGE_SIZE`` = ``--image-size``; SAM3 rounds it down to a multiple of 14):

- timings: for each phrase count of ``--concept-phrases`` (default 1 and 3), ``--concept-repeats`` fresh images, each
  with a first concept job (the image is encoded: ``embedding`` "miss") and a second, identical one (the in-process
  embedding cache: "memory"). Rows: encode time, detect time per phrase (``detect_ms`` / phrases), first and second
  job worker time (``total_ms``) and end-to-end time; medians.
- memory: peak RSS of the worker's pool process (the child of ``samq worker`` that runs the jobs) during one concept
  job on a synthetic ``--memory-image`` (default 4000×3000) with ``--memory-phrases`` phrases (default 8: more
  candidates than 100), threshold 0, ``max_detections`` 100 and then 5, each in a FRESH worker warmed with one small
  job; the peak is the pool process's VmHWM, reset (``/proc/<pid>/clear_refs``) after the warm-up, and RSS sampled
  every 5 ms. Target: the two peaks within 0.5 GB (1 GB = 10⁹ bytes here).
- GPU: the released SAM3 (bf16 autocast) time per image, against Meta's 30 ms on an H200, measured only when the
  machine has a CUDA device AND the released weights are in ``SAMQ_WORKER_MODELS_DIR``/sam3 (nothing is downloaded);
  otherwise a line says why it was not measured.

Then the SAM2 video section (no stack: each measurement is a fresh ``python -m bench --video-child`` process
with ``TORCH_COMPILE_DISABLE=1 TQDM_DISABLE=1``), on a synthetic 160×120 mp4 of one moving ellipse (``tests/support/
videos.py``), hiera_tiny with random weights at ``--video-image-size`` (default 256) on the CPU, one object seeded
with a box on frame 0:

- flat memory: the peak RSS (the process's VmHWM, and its RSS sampled every 5 ms) of one process per run, tracking
  through ``--video-short-frames`` (default 60) and ``--video-long-frames`` (default 600) frames with samq's streaming
  tracker (``Sam2VideoRunner`` over the lazy ``worker.video`` decoder). Target: long / short ≤ 1.10. For contrast,
  the same two runs with Meta's ``SAM2VideoPredictor`` (``init_state`` on a JPEG folder of the same frames).
- speed: frames per second over the short clip, samq's tracker (probe + decode + track + binarize) against Meta's
  raw loop (``add_new_points_or_box`` + ``propagate_in_video`` over the frames ``init_state`` already loaded), both
  built with ``torch.manual_seed(0)`` (identical weights and work), in one process, alternating; one warm-up run
  each, then the median of ``--video-repeats`` (default 5). Target: samq ≥ 0.9× Meta.
- GPU: the same speed comparison at 1024 px (random weights) when the machine has a CUDA device; otherwise a line
  says so.

Then the bulk section, on a stack of its own (redis-server, ``samq api`` with its rate limits lifted, one ``samq
worker --queues bulk,interactive,io`` at ``--image-size`` on the CPU, or on cuda at 1024 when the machine has a CUDA
device): images per second of one ``batch`` job over ``--bulk-n`` uploads (default 64; a segment template with one box
prompt, ``multimask_output`` false), submit to terminal, against the same number of separate ``segment`` jobs with the
same prompt, all submitted at once then awaited, first submit to last terminal. Each measure runs on never-seen images
(embeddings are cached per image content), ``--bulk-repeats`` times (default 3), alternating which goes first; the
medians give the row ``bulk  N=64  batch X img/s  separate Y img/s  ratio Z  target >= 1.0: PASS|FAIL`` (``bulk GPU``
on a GPU).

Then the Roboflow section, on the segment section's stack and worker (the API's rate limits lifted: every client
is one tenant): (c1) ``--repeats`` ``/sam2/segment_image`` calls naming a remembered ``image_id`` (one point, format
rle) interleaved with the same native ``segment`` jobs (``Prefer: wait``): the p50 difference is the compat call's
overhead; (c2) ``--roboflow-calls`` (default 64) such calls at once, ``--roboflow-rounds`` times (default 3), each
with its own prompt, while one client polls ``GET /v1/jobs/{id}`` every 20 ms. Targets: every call answers 200, and
the polls' p99 ≤ 100 ms (next to the same poll's p50/p99 with nothing else running).

Then the storage section, on a stack of its own with S3 (moto's server) behind two latency-adding TCP proxies (the
API's and the worker's, ``tests/support/tcp_proxy.py``; a new connection costs ``--storage-handshake-rtts`` round
trips more, default 1, TCP's handshake): at each round trip of ``--storage-rtts`` (default 0, 50,
100 ms), ``--storage-jobs`` (default 24) segment jobs on never-seen images (uploaded first, outside the clock), all
submitted then awaited, on one ``samq worker --queues interactive`` at ``--storage-image-size`` (default 256): jobs/s;
then one batch job over as many images on a ``--queues bulk,io`` worker: items/s; each against its 0 ms row (targets
≥ 0.9× at 50 ms, ≥ 0.8× at 100 ms) and against the raw model loop (the runner in the bench process: encode + one
point decode per image), with the storage requests and new connections per job the proxies counted, and which
requests they are (method and key pattern).

Weights: the real SAM2.1 architecture, and a shrunk SAM3 (a few layers of 32–64 channels), are built with seeded
random weights (``SAMQ_RANDOM_WEIGHTS=1``) because no checkpoint can be downloaded here; speed is the
architecture's, masks are meaningless.

    .venv/bin/python -m bench                          # hiera_tiny at 1024, 50 repeats; then SAM3 concept
    .venv/bin/python -m bench --image-size 256 --repeats 20 --json bench.json
    .venv/bin/python -m bench --only segment           # (a) and (b) only
    .venv/bin/python -m bench --only concept --concept-repeats 5 --concept-phrases 1,3
    .venv/bin/python -m bench --only concept --no-memory   # concept timings without the 4000×3000 jobs
    .venv/bin/python -m bench --only video             # SAM2 video: flat memory and speed (minutes)
    .venv/bin/python -m bench --only bulk              # a batch of 64 against 64 separate jobs, 3 repeats
    .venv/bin/python -m bench --only roboflow          # compat call overhead; 64 blocking calls at once
    .venv/bin/python -m bench --only storage           # jobs/s with S3 0, 50, 100 ms away; requests per job

Flags: ``--only {segment,concept,video,bulk,roboflow,storage}`` (default: all six sections), ``--concept-repeats N`` (default 5),
``--concept-phrases N,M`` (default 1,3; at most 8), ``--memory-image WxH`` (default 4000x3000),
``--memory-phrases N`` (default 8), ``--no-memory``; ``--video-image-size`` (default 256), ``--video-short-frames``
(default 60), ``--video-long-frames`` (default 600), ``--video-repeats`` (default 5); ``--bulk-n`` (default 64),
``--bulk-repeats`` (default 3); ``--roboflow-calls`` (default 64), ``--roboflow-rounds`` (default 3);
``--storage-image-size`` (default 256), ``--storage-jobs`` (default 24), ``--storage-rtts`` (default 0,50,100),
``--storage-handshake-rtts`` (default 1);
``--image-size``, ``--model`` (SAM2 only), ``--repeats`` (segment section), ``--json
PATH`` (the concept, video, bulk, roboflow and storage numbers under ``"concept"``, ``"video"``, ``"bulk"``,
``"roboflow"`` and ``"storage"``), ``--keep``.

Layout: :mod:`bench.segment`, :mod:`bench.concept` (with :mod:`bench.concept_memory`), :mod:`bench.video` (with
:mod:`bench.video_child`, the measured process), :mod:`bench.bulk`, :mod:`bench.roboflow` and :mod:`bench.storage`, one per section; :mod:`bench.jobs` (images,
uploads, concept jobs), :mod:`bench.memory` (peak RSS), :mod:`bench.report` (percentiles, verdicts, the machine) and
:mod:`bench.stacks` (the test suite's :class:`tests.support.stack.Stack`, set up for timing). Run it from the
repository root.

Exit status 0 whenever measurements were taken, whether or not the targets are met (the table says PASS/FAIL).
"""
