// The API as these pages call it: the caller's key (from the URL fragment #key=…, or asked for on a 401) is kept in
// this tab's sessionStorage and sent as "Authorization: Bearer"; fragments never reach a server or its logs.
const STORE = "samq.apiKey";
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.has("key")) {
  sessionStorage.setItem(STORE, fragment.get("key"));
  fragment.delete("key");
  const rest = fragment.toString();
  history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
}

/** Where the API is: the pages live under {BASE}/view/ and {BASE}/docs (BASE is "" unless behind a path prefix). */
export const BASE = location.pathname.includes("/view/")
  ? location.pathname.slice(0, location.pathname.lastIndexOf("/view/"))
  : location.pathname.replace(/\/docs\/?$/, "");
export const TERMINAL = ["succeeded", "failed", "canceled"];

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(`${status} ${error.code || ""}: ${error.message || "request failed"}`);
    this.status = status;
    this.code = error.code || `http_${status}`;
    this.details = error.details || [];
  }
}

export function storedKey() {
  return sessionStorage.getItem(STORE);
}

export function forgetKey() {
  sessionStorage.removeItem(STORE);
}

/** fetch() of an API path with the key; a 401 asks for a key once and retries. */
export async function api(path, init = {}) {
  const send = () => {
    const headers = new Headers(init.headers || {});
    const key = storedKey();
    if (key) headers.set("Authorization", `Bearer ${key}`);
    return fetch(BASE + path, { ...init, headers });
  };
  let response = await send();
  if (response.status === 401) {
    const key = window.prompt("API key for this samq server (kept in this browser tab only)");
    if (key && key.trim()) {
      sessionStorage.setItem(STORE, key.trim());
      response = await send();
    }
  }
  return response;
}

/** The JSON body of an API call; an error answer throws ApiError with its code. */
export async function json(path, init = {}) {
  const response = await api(path, init);
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

/** POST /v1/jobs with Prefer: wait; polls when the server answered 202 before the job ended. */
export async function runJob(spec, waitSeconds = 30) {
  const init = {
    method: "POST",
    headers: { "Content-Type": "application/json", Prefer: `wait=${waitSeconds}` },
    body: JSON.stringify(spec),
  };
  let job = await json("/v1/jobs", init);
  while (!TERMINAL.includes(job.status)) {
    await new Promise((resolve) => setTimeout(resolve, 250));
    job = await json(`/v1/jobs/${job.id}`);
  }
  return job;
}

/** A result file's presigned URL (it carries its own signature: no key is sent with it). */
export async function fetchFile(job, name) {
  const file = job.result && job.result.files.find((f) => f.name === name);
  if (!file) throw new Error(`job ${job.id} has no file ${name}`);
  const response = await fetch(new URL(file.url, location.href));
  if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
  return response;
}

/** A DOM element: el("p", {class: "x"}, "text", child). Text is always text (never parsed as HTML). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.filter((c) => c !== undefined && c !== null));
  return node;
}
