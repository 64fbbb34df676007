// A track job: the video (when the browser can play it) with each processed frame's masks and ids over it; the
// frame is chosen with the slider, the frame-number field, or played along with the video.
import { el, fetchFile } from "./api.js";
import { Stage, controls, legend } from "./overlay.js";

export async function showTrack(view, job, summary, input) {
  const text = await (await fetchFile(job, "tracks.jsonl")).text();
  const frames = text.split("\n").filter((line) => line.trim()).map((line) => JSON.parse(line));
  const { width, height, fps } = summary.video;
  const stage = new Stage(width, height, "video", input && input.media && input.media.url);
  const video = stage.media;
  const seeds = (input && input.request && input.request.objects) || [];
  const last = Math.max(frames.length - 1, 0);
  const slider = el("input", { id: "frame-slider", type: "range", min: 0, max: last, value: 0 });
  const number = el("input", { id: "frame-number", type: "number", min: 0, value: frames.length && frames[0].frame });
  const play = el("button", { id: "play", type: "button" }, "play");
  const caption = el("p", { id: "frame-caption" });
  const list = el("div", { id: "legend" });
  let current = 0;
  let token = 0;

  const paint = (index) => {
    const line = frames[index];
    const objects = line.objects.map((o) => ({
      key: o.id, label: o.label, score: o.score, rle: o.mask, bbox: o.bbox, area: o.area,
    }));
    const marks = seeds.filter((s) => s.frame === line.frame).map((s) => ({ points: s.points || [], box: s.box }));
    stage.show(objects, marks);
    list.replaceChildren(legend(stage, () => paint(current)));
    caption.textContent = `frame ${line.frame} · ${line.time.toFixed(3)} s · ${objects.length} object(s): `
      + (objects.map((o) => o.key).join(", ") || "none");
    slider.value = index;
    number.value = line.frame;
    view.dataset.frame = line.frame;
  };

  /** Seek the video to frame `index` (the middle of its display interval) and paint it once it is there. */
  const show = async (index) => {
    if (!frames.length) return;
    current = Math.min(Math.max(index, 0), frames.length - 1);
    const mine = ++token;
    if (video && !video.classList.contains("unavailable") && video.readyState >= 1) {
      const target = frames[current].time + (fps ? 0.5 / fps : 0);
      if (Math.abs(video.currentTime - target) > 1e-3) {
        const seeked = new Promise((resolve) => {
          video.addEventListener("seeked", resolve, { once: true });
          setTimeout(resolve, 3000);  // a video that will not seek still gets its masks
        });
        video.currentTime = Math.min(target, video.duration || target);
        await seeked;
      }
    }
    if (mine === token) paint(current);
  };

  slider.addEventListener("input", () => show(Number(slider.value)));
  number.addEventListener("change", () => {
    const wanted = Number(number.value);
    let best = 0;  // the last processed frame at or before the number asked for
    frames.forEach((line, i) => { if (line.frame <= wanted) best = i; });
    show(best);
  });
  play.addEventListener("click", () => {
    if (!video || video.classList.contains("unavailable")) return;
    if (video.paused) video.play(); else video.pause();
  });
  if (video) {
    video.addEventListener("play", () => { play.textContent = "pause"; follow(); });
    video.addEventListener("pause", () => { play.textContent = "play"; });
    video.addEventListener("loadedmetadata", () => show(current), { once: true });
  }
  const follow = () => {  // while playing: the processed frame shown at each displayed video frame
    if (!video || video.paused || !video.requestVideoFrameCallback) return;
    video.requestVideoFrameCallback((_now, meta) => {
      let best = 0;
      frames.forEach((line, i) => { if (line.time <= meta.mediaTime + 1e-3) best = i; });
      if (best !== current) { current = best; paint(best); }
      follow();
    });
  };

  const stats = `${summary.frames} frames processed of ${summary.video.frames}, ${summary.objects_tracked} object(s)`
    + (summary.partial ? " (partial: canceled)" : "");
  view.replaceChildren(controls(() => paint(current)), el("p", {}, stats), stage.node,
    el("div", { class: "frame-controls" }, play, el("label", {}, "frame ", number), slider), caption, list);
  if (!input || !input.media) {
    view.insertBefore(el("p", { class: "note" }, "The input video is not available here: the masks are drawn on "
      + "a neutral background."), stage.node);
  }
  if (frames.length) paint(0);
  view.dataset.ready = "track";
}
