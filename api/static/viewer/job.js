// The results viewer of one job: /view/jobs/{id} (a batch item: ?item=N). Everything comes from the API.
import { ApiError, TERMINAL, el, json } from "./api.js";
import { showBatch } from "./batch.js";
import { Stage, controls, instancesOf, legend, promptsOf } from "./overlay.js";
import { showTrack } from "./track.js";

const jobId = decodeURIComponent(location.pathname.split("/").pop());
const query = new URLSearchParams(location.search);
const view = document.getElementById("view");
const status = document.getElementById("status");

/** An image job's masks over its image, with controls and legend. */
export function showImage(doc, input) {
  const { width, height } = doc.image;
  const stage = new Stage(width, height, "image", input && input.media && input.media.url);
  const list = el("div", { id: "legend" });
  const redraw = () => {
    stage.draw();
    list.replaceChildren(legend(stage, redraw));
  };
  stage.show(instancesOf(doc), promptsOf(input && input.request));
  list.replaceChildren(legend(stage, redraw));
  const note = input && input.media ? null : el("p", { class: "note" }, "The input image is not available here "
    + "(an image_id or an expired upload): the masks are drawn on a neutral background.");
  view.replaceChildren(...[controls(redraw), note, stage.node, list].filter(Boolean));
  view.dataset.ready = "image";
}

function describe(job) {
  const parts = [job.type, job.model, job.status];
  if (job.progress && job.progress.total) parts.push(`${job.progress.done}/${job.progress.total} ${job.progress.unit}`);
  document.getElementById("title").textContent = `${job.id}`;
  document.title = `samq ${job.id}`;
  status.replaceChildren(el("span", { class: `status ${job.status}` }, parts.join(" · ")));
  if (job.error) {
    status.append(" ", el("code", { class: "error-code" }, job.error.code), " ", job.error.message);
  }
}

async function main() {
  let job = await json(`/v1/jobs/${encodeURIComponent(jobId)}`);
  describe(job);
  while (!TERMINAL.includes(job.status)) {  // follow it until it ends
    await new Promise((resolve) => setTimeout(resolve, 1000));
    job = await json(`/v1/jobs/${encodeURIComponent(jobId)}`);
    describe(job);
  }
  if (query.has("item")) return showItem(job, Number(query.get("item")));
  if (!job.result) {
    view.replaceChildren(el("p", { class: "note" }, "This job has no result to show."));
    view.dataset.ready = "empty";
    return;
  }
  const [doc, input] = await Promise.all([
    json(`/v1/jobs/${jobId}/result`),
    json(`/v1/jobs/${jobId}/input`).catch(() => null),
  ]);
  if (job.type === "track") return showTrack(view, job, doc, input);
  if (job.type === "batch") return showBatch(view, job, doc);
  if (job.type === "embed") {
    const { width, height, image_id: imageId } = doc.image;
    const stage = new Stage(width, height, "image", input && input.media && input.media.url);
    view.replaceChildren(el("p", {}, `Embedding cached for image_id ${imageId} (${doc.model}).`),
      stage.node);
    view.dataset.ready = "embed";
    return;
  }
  showImage(doc, input);
}

async function showItem(job, index) {
  document.getElementById("title").append(` · item ${index}`);
  const back = el("a", { href: location.pathname }, "back to the batch");
  try {
    const [doc, input, batch] = await Promise.all([
      json(`/v1/jobs/${jobId}/items/${index}`),
      json(`/v1/jobs/${jobId}/input?item=${index}`).catch(() => null),
      json(`/v1/jobs/${jobId}/input`).catch(() => null),
    ]);
    if (!doc.image) {  // a video item: its summary
      view.replaceChildren(back, el("pre", {}, JSON.stringify(doc, null, 2)));
    } else {
      const request = input && input.request && input.request.prompts ? input.request
        : batch && batch.request.template;
      showImage(doc, { media: input && input.media, request });
      view.prepend(back);
    }
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    const detail = error.details[0] || {};
    view.replaceChildren(back, el("p", {}, el("code", { class: "error-code" }, detail.code || error.code), " ",
      detail.message || error.message));
  }
  view.dataset.ready = "item";
}

main().catch((error) => {
  status.replaceChildren(el("span", { class: "status failed" }, String(error.message || error)));
  view.dataset.ready = "error";
});
