// Click to segment: the image is uploaded and embedded once; each click (left: positive point, right: negative
// point, drag: box) runs a segment job on {"image_id"} with every prompt so far and the previous answer's mask as
// mask_input, waited for with Prefer: wait=30. Each refresh's latency is shown.
import { ApiError, el, json, runJob } from "./api.js";
import { Stage } from "./overlay.js";

const status = document.getElementById("status");
const holder = document.getElementById("stage");
const log = document.getElementById("history");
const model = document.getElementById("model");
const fileInput = document.getElementById("file");

let image = null;  // {file, url, width, height, imageId}
let stage = null;
let steps = [];  // [{points, box, job, instance}] after each refresh, for undo
let points = [];
let box = null;
let busy = false;
let pending = false;

function say(text, kind = "") {
  status.className = kind;
  status.textContent = text;
}

async function load(file) {
  if (!file) return;
  const url = URL.createObjectURL(file);
  const probe = new Image();
  probe.src = url;
  try {
    await probe.decode();
  } catch {
    say(`${file.name} is not an image this browser can show`, "error");
    return;
  }
  image = { file, url, width: probe.naturalWidth, height: probe.naturalHeight, imageId: null };
  points = [];
  box = null;
  steps = [];
  log.replaceChildren();
  stage = new Stage(image.width, image.height, "image", url);
  stage.show([]);
  holder.replaceChildren(stage.node);
  bind(stage);
  delete holder.dataset.job;
  await embed();
}

async function embed() {
  const started = performance.now();
  say("uploading and embedding the image…");
  try {
    const upload = await json("/v1/uploads", {
      method: "POST", headers: { "Content-Type": image.file.type || "application/octet-stream" }, body: image.file,
    });
    const job = await runJob({ type: "embed", model: model.value, image: { upload: upload.id } });
    if (job.status !== "succeeded") throw new Error(`embed ${job.id} ${job.status}: ${job.error && job.error.code}`);
    image.imageId = job.result.summary.image_id;
    holder.dataset.embed = job.id;
    say(`ready (${Math.round(performance.now() - started)} ms to upload and embed): left click adds a point, `
      + "right click a negative point, drag draws a box");
  } catch (error) {
    say(String(error.message || error), "error");
  }
}

/** Display pixels → image pixels, inside the image. */
function position(event) {
  const rect = stage.marks.getBoundingClientRect();
  const x = ((event.clientX - rect.left) / rect.width) * image.width;
  const y = ((event.clientY - rect.top) / rect.height) * image.height;
  return { x: Math.min(Math.max(x, 0), image.width - 0.01), y: Math.min(Math.max(y, 0), image.height - 0.01) };
}

function bind(current) {
  const target = current.marks;
  let start = null;
  target.addEventListener("contextmenu", (event) => event.preventDefault());
  target.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 && event.button !== 2) return;
    event.preventDefault();
    start = { ...position(event), button: event.button, clientX: event.clientX, clientY: event.clientY };
  });
  target.addEventListener("pointerup", (event) => {
    if (!start || !image || !image.imageId) return;
    const end = position(event);
    const dragged = Math.hypot(event.clientX - start.clientX, event.clientY - start.clientY) > 5;
    if (dragged && start.button === 0) {
      box = { x0: Math.min(start.x, end.x), y0: Math.min(start.y, end.y), x1: Math.max(start.x, end.x),
        y1: Math.max(start.y, end.y) };
    } else {
      points.push({ x: round(start.x), y: round(start.y), positive: start.button === 0 });
    }
    start = null;
    refresh();
  });
}

function round(value) {
  return Math.round(value * 100) / 100;
}

function marks() {
  return [{ points, box }];
}

/** One segment job for the prompts so far; clicks made meanwhile are sent together by the next one. */
async function refresh() {
  if (!image || !image.imageId) return;
  stage.prompts = marks();
  stage.drawMarks();
  if (busy) {
    pending = true;
    return;
  }
  busy = true;
  const started = performance.now();
  const previous = steps.at(-1);
  const prompt = { points: [...points] };
  if (box) prompt.box = { ...box };
  if (previous) prompt.mask_input = { job: previous.job.id, index: 0 };
  const spec = {
    type: "segment", model: model.value, image: { image_id: image.imageId }, prompts: [prompt],
    multimask_output: !previous && !box && points.length === 1,  // one click is ambiguous: pick the best of three
  };
  try {
    say("segmenting…");
    const job = await runJob(spec);
    if (job.status !== "succeeded") {
      const error = job.error || {};
      say(`${job.id} ${job.status}: ${error.code || ""} ${error.message || ""}`, "error");
    } else {
      const doc = await json(`/v1/jobs/${job.id}/result`);
      const instance = doc.instances[0];
      stage.show([{ key: 0, score: instance.score, rle: instance.rle, bbox: instance.bbox }], marks());
      const ms = Math.round(performance.now() - started);
      steps.push({ points: [...points], box, job, instance, ms });
      holder.dataset.job = job.id;
      record(job, ms, spec);
      say(`mask ${steps.length}: ${ms} ms (score ${instance.score.toFixed(3)})`);
    }
  } catch (error) {
    say(error instanceof ApiError ? error.message : String(error), "error");
  } finally {
    busy = false;
  }
  if (pending) {
    pending = false;
    refresh();
  }
}

function record(job, ms, spec) {
  const prompt = spec.prompts[0];
  const server = job.result.summary.timings && job.result.summary.timings.total_ms;
  log.prepend(el("tr", { "data-job": job.id },
    el("td", {}, String(steps.length)),
    el("td", {}, el("a", { href: `jobs/${job.id}`, target: "_blank" }, job.id)),
    el("td", { class: "ms" }, `${ms} ms`),
    el("td", {}, server == null ? "" : `${Math.round(server)} ms`),
    el("td", {}, `${prompt.points.length} point(s)${prompt.box ? " + box" : ""}`
      + (prompt.mask_input ? ` + mask of ${prompt.mask_input.job}` : ""))));
}

function undo() {
  if (!steps.length) return;
  steps.pop();
  log.firstElementChild?.remove();
  const last = steps.at(-1);
  points = last ? [...last.points] : [];
  box = last ? last.box : null;
  const shown = last ? [{ key: 0, score: last.instance.score, rle: last.instance.rle, bbox: last.instance.bbox }] : [];
  stage.show(shown, marks());
  if (last) holder.dataset.job = last.job.id; else delete holder.dataset.job;
}

function clear() {
  steps = [];
  points = [];
  box = null;
  log.replaceChildren();
  if (stage) stage.show([], marks());
  delete holder.dataset.job;
}

// ---- exports of the mask on screen -------------------------------------------------------------------------

function current() {
  const last = steps.at(-1);
  if (!last) {
    say("no mask yet: click on the image first", "error");
    return null;
  }
  return last;
}

function download(name, blob) {
  const link = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

function stem() {
  return image.file.name.replace(/\.[^.]*$/, "") || "image";
}

function exportPng() {
  const last = current();
  if (!last) return;
  const canvas = el("canvas", { width: image.width, height: image.height });
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(image.width, image.height);
  const mask = stage.instances[0].mask;
  for (let i = 0; i < mask.length; i++) {
    const v = mask[i] ? 255 : 0;
    pixels.data.set([v, v, v, 255], i * 4);
  }
  context.putImageData(pixels, 0, 0);
  canvas.toBlob((blob) => download(`${stem()}-mask.png`, blob), "image/png");
}

function exportRle() {
  const last = current();
  if (!last) return;
  download(`${stem()}-mask.rle.json`, new Blob([JSON.stringify(last.instance.rle)], { type: "application/json" }));
}

function exportCoco() {
  const last = current();
  if (!last) return;
  const { bbox, area, score, rle } = last.instance;
  const coco = {
    info: { description: `samq ${last.job.id}`, date_created: new Date().toISOString() },
    images: [{ id: 1, file_name: image.file.name, width: image.width, height: image.height }],
    categories: [{ id: 1, name: "object" }],
    annotations: [{ id: 1, image_id: 1, category_id: 1, segmentation: rle, area, score, iscrowd: 0,
      bbox: [bbox.x0, bbox.y0, bbox.x1 - bbox.x0, bbox.y1 - bbox.y0] }],
  };
  download(`${stem()}-coco.json`, new Blob([JSON.stringify(coco)], { type: "application/json" }));
}

fileInput.addEventListener("change", () => load(fileInput.files[0]));
holder.addEventListener("dragover", (event) => event.preventDefault());
holder.addEventListener("drop", (event) => {
  event.preventDefault();
  load(event.dataTransfer.files[0]);
});
model.addEventListener("change", () => {
  if (!image) return;
  clear();
  embed();
});
document.getElementById("undo").addEventListener("click", undo);
document.getElementById("clear").addEventListener("click", clear);
document.getElementById("export-png").addEventListener("click", exportPng);
document.getElementById("export-rle").addEventListener("click", exportRle);
document.getElementById("export-coco").addEventListener("click", exportCoco);
