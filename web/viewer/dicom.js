// DICOM in the viewer: the DICOM series folders under the data root (GET /api/series), a
// session on one (POST /api/series/sessions), and the "Download DICOM SEG" link of the open
// session (GET /api/sessions/{sid}/dicom-seg?series=...), enabled only for a session opened
// from a series: the SEG references the series' instances. For any other session the link
// is disabled and the note under it says why (the server's reason, GET /api/sessions/{sid}/series).

import { $, fillSelect } from "./dom.js";
import { getJSON, postJSON } from "./api.js";

const enc = encodeURIComponent;
export const dicomRoutes = {
  series: () => "/api/series",
  seriesSessions: () => "/api/series/sessions",
  sessionSeries: (sid) => `/api/sessions/${enc(sid)}/series`,
  dicomSeg: (sid, series) => `/api/sessions/${enc(sid)}/dicom-seg?series=${enc(series)}`,
};

/** enable the link with `href`, or disable it with the reason as its note and tooltip */
export function setLink(link, note, href, reason) {
  if (href) {
    link.href = href;
    link.removeAttribute("aria-disabled");
    link.classList.remove("disabled");
    link.title = "the session's label map as a DICOM SEG referencing its series";
    note.textContent = "";
  } else {
    link.removeAttribute("href");
    link.setAttribute("aria-disabled", "true");
    link.classList.add("disabled");
    link.title = reason ?? "";
    note.textContent = reason ?? "";
  }
}

/**
 * Wire the DICOM section. `hooks`: openSession(sid) -> Promise, refreshLists() -> Promise,
 * options() -> {order, preset} of the page, say(text, isError).
 * Returns { refresh, update(sid), state }.
 */
export function initDicom(hooks) {
  const state = { series: [], sid: null, source: null };
  const link = $("download-seg");
  const note = $("seg-note");

  async function refresh() {
    try {
      state.series = await getJSON(dicomRoutes.series());
    } catch (err) {
      state.series = [];
      hooks.say(`DICOM series: ${err.detail ?? err}`, true);
    }
    fillSelect($("series-select"), state.series, (s) => s.path, (s) => `${s.path} (${s.files} files)`);
    $("series-row").hidden = state.series.length === 0;
  }

  /** the open session changed (or its status did): look up its series once per session */
  async function update(sid) {
    if (sid === state.sid) return;
    state.sid = sid;
    state.source = null;
    setLink(link, note, null, sid ? "looking up the session's series…" : "no session open");
    if (!sid) return;
    try {
      const out = await getJSON(dicomRoutes.sessionSeries(sid));
      if (state.sid !== sid) return; // another session was opened meanwhile
      state.source = out.series;
      setLink(link, note, out.series ? dicomRoutes.dicomSeg(sid, out.series) : null, out.reason);
    } catch (err) {
      if (state.sid === sid) setLink(link, note, null, `cannot tell the session's series: ${err.detail ?? err}`);
    }
  }

  async function createFromSeries() {
    const path = $("series-select").value;
    if (!path) return;
    hooks.say(`reading the DICOM series ${path}…`);
    const body = { path, ...hooks.options() };
    const st = await postJSON(dicomRoutes.seriesSessions(), body);
    await hooks.refreshLists();
    await hooks.openSession(st.id);
  }

  $("create-from-series").addEventListener("click", () => {
    createFromSeries().catch((err) => hooks.say(err.detail ?? String(err), true));
  });
  link.addEventListener("click", (e) => {
    if (link.classList.contains("disabled")) e.preventDefault();
  });
  setLink(link, note, null, "no session open");
  return { refresh, update, state };
}
