// The JSON API of segrefine (src/segrefine/server/routes.py keeps the same route names).
const enc = encodeURIComponent;
const scope = (structure) => (structure === "" || structure == null ? "" : `?structure=${enc(structure)}`);

export const routes = {
  files: () => "/api/files",
  sessions: () => "/api/sessions",
  upload: () => "/api/sessions/upload",
  session: (sid) => `/api/sessions/${enc(sid)}`,
  predict: (sid) => `/api/sessions/${enc(sid)}/predict`,
  maps: (sid) => `/api/sessions/${enc(sid)}/maps`,
  // structure: "" / null = the whole mask's suggestions and queue, else a structure id
  suggestions: (sid, structure = "") => `/api/sessions/${enc(sid)}/suggestions${scope(structure)}`,
  next: (sid, structure = "") => `/api/sessions/${enc(sid)}/next${scope(structure)}`,
  structures: (sid) => `/api/sessions/${enc(sid)}/structures`,
  labels: (sid) => `/api/sessions/${enc(sid)}/labels`,
  scribbles: (sid) => `/api/sessions/${enc(sid)}/scribbles`,
  refine: (sid) => `/api/sessions/${enc(sid)}/refine`,
  undo: (sid) => `/api/sessions/${enc(sid)}/undo`,
  redo: (sid) => `/api/sessions/${enc(sid)}/redo`,
  accept: (sid) => `/api/sessions/${enc(sid)}/accept`,
  slice: (sid, axis, index) => `/api/sessions/${enc(sid)}/slices/${axis}/${index}`,
  array: (sid, name) => `/api/sessions/${enc(sid)}/arrays/${name}`,
  volume: (sid, name) => `/api/sessions/${enc(sid)}/volumes/${name}`,
  download: (sid) => `/api/sessions/${enc(sid)}/download`,
  cohort: () => "/api/cohort",
  cohortCase: (name) => `/api/cohort/cases/${enc(name)}/session`,
};

export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

// A network failure (server stopped, connection refused) is a TypeError in fetch: give it a
// message a person can act on, with status 0.
async function request(url, init = undefined) {
  try {
    return await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, `the server is unreachable (${location.origin}): is \`segrefine serve\` still running?`);
  }
}

async function check(response) {
  if (response.ok) return response;
  let detail = response.statusText;
  try {
    detail = (await response.json()).detail ?? detail;
  } catch (_) { /* not JSON */ }
  throw new ApiError(response.status, detail);
}

export async function getJSON(url) {
  return (await check(await request(url, { cache: "no-store" }))).json();
}

export async function postJSON(url, body = undefined) {
  const init = { method: "POST", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return (await check(await request(url, init))).json();
}

export async function deleteJSON(url) {
  await check(await request(url, { method: "DELETE" }));
}

export async function postForm(url, form) {
  return (await check(await request(url, { method: "POST", body: form }))).json();
}

export async function getBytes(url) {
  const r = await check(await request(url, { cache: "no-store" }));
  return new Uint8Array(await r.arrayBuffer());
}

export function decodeBase64(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
