// A batch job: its counts and failure codes, and a paginated gallery of its items, each with its masks over its
// image, or its error code when it failed.
import { ApiError, el, json } from "./api.js";
import { Stage, instancesOf } from "./overlay.js";

export async function showBatch(view, job, doc) {
  const query = new URLSearchParams(location.search);
  const total = doc.total ?? job.progress.total;
  const perPage = Math.min(Math.max(Number(query.get("per")) || 12, 1), 60);
  const pages = Math.max(Math.ceil(total / perPage), 1);
  let page = Math.min(Math.max(Number(query.get("page")) || 1, 1), pages);
  const codes = Object.entries(doc.failure_codes || {}).map(([code, n]) => `${code} × ${n}`).join(", ");
  const counts = el("p", { id: "batch-counts" },
    `${total} items: ${doc.succeeded} succeeded, ${doc.failed} failed, ${doc.not_run} not run`
    + (codes ? ` (${codes})` : ""));
  const gallery = el("div", { id: "gallery", class: "gallery" });
  const label = el("span", { id: "page-label" });
  const previous = el("button", { id: "previous-page", type: "button" }, "previous");
  const next = el("button", { id: "next-page", type: "button" }, "next");

  const render = async () => {
    label.textContent = `page ${page} of ${pages}`;
    previous.disabled = page <= 1;
    next.disabled = page >= pages;
    const url = new URL(location.href);
    url.searchParams.set("page", page);
    history.replaceState(null, "", url);
    const first = (page - 1) * perPage;
    const indexes = Array.from({ length: Math.min(perPage, total - first) }, (_, i) => first + i);
    delete gallery.dataset.page;
    gallery.replaceChildren(...await Promise.all(indexes.map((index) => card(job, index))));
    gallery.dataset.page = page;
  };
  previous.addEventListener("click", () => { page -= 1; render(); });
  next.addEventListener("click", () => { page += 1; render(); });
  view.replaceChildren(counts, el("div", { class: "pager" }, previous, label, next), gallery);
  await render();
  view.dataset.ready = "batch";
}

async function card(job, index) {
  const [outcome, input] = await Promise.all([
    json(`/v1/jobs/${job.id}/items/${index}`).catch((error) => error),
    json(`/v1/jobs/${job.id}/input?item=${index}`).catch(() => null),
  ]);
  const request = (input && input.request) || {};
  const name = request.name || request.upload || request.s3 || request.url || `item ${index}`;
  const title = el("a", { class: "item-title", href: `?item=${index}` }, `#${index} ${name}`);
  if (outcome instanceof ApiError) {
    const detail = outcome.details[0] || {};
    const code = { item_failed: detail.code, item_not_done: "not_run" }[outcome.code] || outcome.code;
    return el("figure", { class: "item failed", "data-index": index, "data-status": "failed" }, title,
      el("figcaption", {}, el("code", { class: "error-code" }, code), " ",
        detail.message || outcome.message));
  }
  if (outcome instanceof Error) throw outcome;
  if (!outcome.image) {  // a video item: its summary
    return el("figure", { class: "item", "data-index": index, "data-status": "succeeded" }, title,
      el("figcaption", {}, `${outcome.frames} frames, ${outcome.objects_tracked} object(s)`));
  }
  const stage = new Stage(outcome.image.width, outcome.image.height, "image", input && input.media && input.media.url);
  const instances = instancesOf(outcome);
  stage.show(instances);
  return el("figure", { class: "item", "data-index": index, "data-status": "succeeded" }, title, stage.node,
    el("figcaption", {}, `${instances.length} instance(s)`));
}
