// A stage: the image or video, the masks canvas (at the media's own pixel size), a prompts canvas and id labels
// on top; and the legend that toggles instances. Masks are painted pixel for pixel from their RLE.
import { el } from "./api.js";
import { decodeMask } from "./rle.js";

// Twenty distinct colours (Sasha Trubetskoy's list).
export const PALETTE = [
  [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
  [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200],
  [128, 0, 0], [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128], [128, 128, 128],
];

export function colourOf(key) {
  if (typeof key === "number") return PALETTE[Math.abs(key) % PALETTE.length];
  let hash = 0;
  for (const ch of String(key)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

/** Display settings shared by every stage of a page. */
export const settings = {
  colourBy: "instance", opacity: 0.5, outlines: true, prompts: true, ids: true, hidden: new Set(),
};

/** The controls of `settings`; `onChange` redraws. */
export function controls(onChange) {
  const update = (apply) => (event) => {
    apply(event.target);
    onChange();
  };
  return el(
    "div",
    { class: "controls" },
    el("label", {}, "colour by ",
      el("select", { id: "colour-by", onchange: update((t) => (settings.colourBy = t.value)) },
        el("option", { value: "instance" }, "instance"), el("option", { value: "label" }, "label"))),
    el("label", {}, "opacity ",
      el("input", { id: "opacity", type: "range", min: 0, max: 100, value: settings.opacity * 100,
        oninput: update((t) => (settings.opacity = Number(t.value) / 100)) })),
    el("label", {}, el("input", { id: "outlines", type: "checkbox", checked: settings.outlines,
      onchange: update((t) => (settings.outlines = t.checked)) }), " outlines"),
    el("label", {}, el("input", { id: "show-prompts", type: "checkbox", checked: settings.prompts,
      onchange: update((t) => (settings.prompts = t.checked)) }), " prompts"),
    el("label", {}, el("input", { id: "show-ids", type: "checkbox", checked: settings.ids,
      onchange: update((t) => (settings.ids = t.checked)) }), " ids and labels"),
  );
}

export class Stage {
  /** `kind`: "image" or "video"; `url`: the media (null: masks on a neutral background). */
  constructor(width, height, kind, url) {
    this.width = width;
    this.height = height;
    this.instances = [];
    this.prompts = [];
    this.masks = el("canvas", { class: "masks", width, height });
    this.marks = el("canvas", { class: "marks", width, height });
    this.labels = el("div", { class: "labels" });
    this.media = null;
    if (url) {
      this.media = kind === "video"
        ? el("video", { class: "media", src: url, muted: true, playsinline: true, preload: "auto" })
        : el("img", { class: "media", src: url, alt: "" });
      this.media.addEventListener("error", () => this.media.classList.add("unavailable"));
    }
    this.node = el("div", { class: "stage", style: `--aspect: ${width / height}; aspect-ratio: ${width} / ${height}` },
      this.media, this.masks, this.marks, this.labels);
  }

  /** instances: [{key, label, score, rle, bbox}] in drawing order (later on top). */
  show(instances, prompts = []) {
    this.instances = instances.map((i) => ({ ...i, mask: i.mask || maskOf(i, this.width, this.height) }));
    this.prompts = prompts;
    this.draw();
  }

  colour(instance) {
    return colourOf(settings.colourBy === "label" && instance.label != null ? instance.label : instance.key);
  }

  draw() {
    const { width, height } = this;
    const context = this.masks.getContext("2d");
    const image = context.createImageData(width, height);
    const data = image.data;
    const fill = Math.round(settings.opacity * 255);
    for (const instance of this.instances) {
      if (settings.hidden.has(instance.key)) continue;
      const [r, g, b] = this.colour(instance);
      const mask = instance.mask;
      for (let i = 0; i < mask.length; i++) {
        if (!mask[i]) continue;
        const x = i % width;
        const edge = settings.outlines && (x === 0 || x === width - 1 || i < width || i >= mask.length - width
          || !mask[i - 1] || !mask[i + 1] || !mask[i - width] || !mask[i + width]);
        const at = i * 4;
        data[at] = r;
        data[at + 1] = g;
        data[at + 2] = b;
        data[at + 3] = edge ? 255 : fill;
      }
    }
    context.putImageData(image, 0, 0);
    this.drawMarks();
    this.drawLabels();
  }

  drawMarks() {
    const context = this.marks.getContext("2d");
    context.clearRect(0, 0, this.width, this.height);
    if (!settings.prompts) return;
    const unit = Math.max(2, Math.max(this.width, this.height) / 250);
    for (const mark of this.prompts) {
      if (mark.box) {
        const { x0, y0, x1, y1 } = mark.box;
        context.lineWidth = unit;
        context.setLineDash([unit * 3, unit * 2]);
        context.strokeStyle = mark.box.positive === false ? "#ff3b30" : "#ffffff";
        context.strokeRect(x0, y0, x1 - x0, y1 - y0);
        context.setLineDash([]);
      }
      for (const point of mark.points || []) {
        context.beginPath();
        context.arc(point.x, point.y, unit * 2.5, 0, 2 * Math.PI);
        context.fillStyle = point.positive === false ? "#ff3b30" : "#34c759";
        context.fill();
        context.lineWidth = unit / 2;
        context.strokeStyle = "#ffffff";
        context.stroke();
      }
    }
  }

  drawLabels() {
    this.labels.replaceChildren();
    if (!settings.ids) return;
    const taken = new Map();  // tags at one corner are stacked, not drawn over each other
    for (const instance of this.instances) {
      if (settings.hidden.has(instance.key) || !instance.bbox) continue;
      const [r, g, b] = this.colour(instance);
      const text = [`#${instance.key}`, instance.label, score(instance.score)].filter(Boolean).join(" ");
      const left = Math.round((1000 * instance.bbox.x0) / this.width) / 10;
      const top = Math.round((1000 * instance.bbox.y0) / this.height) / 10;
      const below = taken.get(`${left},${top}`) || 0;
      taken.set(`${left},${top}`, below + 1);
      this.labels.append(el("span", {
        class: "tag", "data-key": instance.key,
        style: `left: ${left}%; top: calc(max(0px, calc(${top}% - 1.4em)) + ${below * 1.4}em);`
          + ` background: rgb(${r} ${g} ${b})`,
      }, text));
    }
  }
}

/** An instance's pixels: from its RLE, else (a job that asked for polygons only) its filled polygons, holes cut. */
function maskOf(instance, width, height) {
  if (instance.rle) return decodeMask(instance.rle);
  const mask = new Uint8Array(width * height);
  if (!Array.isArray(instance.polygon)) return mask;
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d");
  const path = new Path2D();
  for (const ring of instance.polygon.flatMap((p) => [p.outer, ...(p.holes || [])])) {
    for (let i = 0; i + 1 < ring.length; i += 2) path[i ? "lineTo" : "moveTo"](ring[i] + 0.5, ring[i + 1] + 0.5);
    path.closePath();
  }
  context.fill(path, "evenodd");
  const alpha = context.getImageData(0, 0, width, height).data;
  for (let i = 0; i < mask.length; i++) mask[i] = alpha[i * 4 + 3] >= 128 ? 1 : 0;
  return mask;
}

export function score(value) {
  return typeof value === "number" ? value.toFixed(2) : "";
}

/** The legend of `stage`'s instances, one toggle each (a toggle hides the instance on every stage). */
export function legend(stage, onToggle) {
  const rows = stage.instances.map((instance) => {
    const [r, g, b] = stage.colour(instance);
    return el("li", { class: "instance", "data-key": instance.key, "data-rgb": `${r},${g},${b}` },
      el("label", {},
        el("input", { type: "checkbox", checked: !settings.hidden.has(instance.key), onchange: (event) => {
          if (event.target.checked) settings.hidden.delete(instance.key);
          else settings.hidden.add(instance.key);
          onToggle();
        } }),
        el("span", { class: "swatch", style: `background: rgb(${r} ${g} ${b})` }),
        el("span", { class: "key" }, `#${instance.key}`), " ",
        el("span", { class: "label" }, instance.label == null ? "" : String(instance.label)), " ",
        el("span", { class: "score" }, score(instance.score)), " ",
        el("span", { class: "area" }, instance.area == null ? "" : `${instance.area} px`)));
  });
  return el("ul", { class: "legend" }, ...rows);
}

/** A segment or concept result document's instances, as stages draw them. */
export function instancesOf(doc) {
  return (doc.instances || []).map((instance) => ({
    key: instance.index, label: instance.label, score: instance.score, rle: instance.rle, polygon: instance.polygon,
    bbox: instance.bbox, area: instance.area,
  }));
}

/** The prompts to mark: segment prompts ({points, box}), concept exemplar boxes. */
export function promptsOf(request) {
  const marks = [];
  for (const prompt of (request && request.prompts) || []) {
    if (prompt.points || prompt.box) marks.push({ points: prompt.points || [], box: prompt.box });
    for (const box of prompt.boxes || []) marks.push({ points: [], box });
  }
  return marks;
}
