// segrefine viewer: NiiVue shows the image, the uncertainty heat map (an overlay
// volume) and the mask + scribbles (NiiVue's drawing bitmap, in its RAS voxel
// order); the strokes are captured on a transparent canvas above NiiVue's, mapped
// to file voxels (i, j, k) with NiiVue's canvas->fraction helper and geometry.js,
// and sent to the server on pen-up, which scribbles, refines and answers the slice.

import * as api from "./api.js";
import { Geometry } from "./geometry.js";
import { segment } from "./draw.js";
import { indexOfId, layout } from "./structures.js";
import { initStructures } from "./structures-panel.js";
import * as paint from "./paint.js";
import { renderQueue as drawQueue, stopText } from "./queue.js";
import { bindKeys, nudge } from "./keys.js";
import { $, fillSelect, say } from "./dom.js";
import { clearMapsForm, mapsForm, showModelWarning, warningOf } from "./models.js";
import { initCohort } from "./cohort.js";
import { initDicom } from "./dicom.js";


let niivue;
try {
  niivue = await import("/vendor/niivue/index.js");
} catch (err) {
  say("NiiVue is not installed on this server: run `npm ci` in web/ and restart.", true);
  throw err;
}
const { Niivue, SLICE_TYPE } = niivue;

const TOOLS = { navigate: null, fg: 1, bg: 2, erase: 0 };
const INK = { fg: "rgba(40,230,60,0.9)", bg: "rgba(30,150,255,0.9)", erase: "rgba(255,255,255,0.8)" };

const S = {
  sid: null,
  status: null,
  sugg: null,
  geom: null,
  mask: null, // Uint8Array, file order (i fastest)
  scr: null,
  unc: null, // uncertainty (Float32Array, file order)
  ulev: null, // uncertainty quantised to 0..levels-1 of the drawing's layout, file order
  umax: 0,
  structures: [], // {id, name, color} of the session's label map
  active: 1, // the structure strokes and refinement edit
  overwrite: false, // false: the other structures' voxels are locked
  scope: "", // the suggestions shown: "" the whole mask, else a structure id
  lay: layout(1), // the drawing's byte layout (structures.js)
  idx: indexOfId([]), // structure id -> position in S.structures
  tool: "fg",
  radius: 1,
  showUnc: true,
  showMask: true,
  edited: new Set(),
  chain: Promise.resolve(), // server requests run one after the other
  pending: 0,
  timings: [], // pen-up -> refined overlay drawn, ms
  ready: false,
};

const glCanvas = $("gl");
const ink = $("ink");
const nv = new Niivue({
  backColor: [0.07, 0.07, 0.09, 1],
  crosshairColor: [1, 0.85, 0, 0.35],
  crosshairWidth: 0.5,
  isNearestInterpolation: true,
  dragAndDropEnabled: false,
  viewModeHotKey: "",
  clipPlaneHotKey: "",
  cycleClipPlaneHotKey: "",
  logLevel: "warn",
  show3Dcrosshair: false,
  isOrientationTextVisible: true,
});
await nv.attachToCanvas(glCanvas);
nv.setDrawOpacity(1);
nv.onLocationChange = () => renderSliceInfo();

// the structures panel (structures-panel.js)
const structures = initStructures({ S, nv, enqueue, afterAction, openSession, paintAll, renderQueue });

// exposed for tests and for a person at the console
window.segrefine = { nv, S, Geometry, goToSlice, currentIndex, canvasToFile, setActive: structures.setActive };

// ------------------------------------------------------------------ geometry helpers
function currentIndex() {
  if (!S.geom) return 0;
  return S.geom.fracToFile(nv.scene.crosshairPos)[S.status.axis];
}

function goToSlice(k) {
  if (!S.geom) return;
  const axis = S.status.axis;
  const n = S.geom.dimsFile[axis];
  k = Math.max(0, Math.min(n - 1, k));
  const f = S.geom.fracToFile(nv.scene.crosshairPos);
  f[axis] = k;
  nv.scene.crosshairPos = S.geom.fileToFrac(f);
  nv.createOnLocationChange();
  nv.drawScene();
  renderSliceInfo();
  renderQueue();
}

/** CSS pixel (relative to the canvas) -> file voxel [i, j, k], or null off the slice */
function canvasToFile(x, y) {
  const dpr = nv.uiData.dpr || window.devicePixelRatio || 1;
  const frac = nv.canvasPos2frac([x * dpr, y * dpr]);
  if (!frac || frac[0] < 0) return null;
  return S.geom.fracToFile(frac);
}

function planeSliceType(axis) {
  const p = S.geom.rasAxisOf[axis]; // file slices along `axis` are NiiVue's planes normal to RAS axis p
  return [SLICE_TYPE.SAGITTAL, SLICE_TYPE.CORONAL, SLICE_TYPE.AXIAL][p];
}

// ------------------------------------------------------------------ mask + scribbles in the drawing (paint.js)
function paintSlice(axis, index) {
  if (nv.drawBitmap) paint.paintSlice(S, nv.drawBitmap, axis, index);
}

function sliceHasScribbles(index) {
  return paint.sliceHasScribbles(S, index);
}

function paintAll() {
  const axis = S.status.axis;
  for (let k = 0; k < S.geom.dimsFile[axis]; k++) paintSlice(axis, k);
  nv.refreshDrawing(true);
}

/** copy a SliceOut answer into S.mask / S.scr and the drawing */
function applySlice(sl) {
  paint.copySlice(S, sl, api.decodeBase64(sl.mask), api.decodeBase64(sl.scribbles));
  if (sl.axis === S.status.axis) {
    paintSlice(sl.axis, sl.index);
  } else { // a slice along another axis crosses every session-axis slice
    for (let k = 0; k < S.geom.dimsFile[S.status.axis]; k++) paintSlice(S.status.axis, k);
  }
}

// ------------------------------------------------------------------ panel
function renderSliceInfo() {
  if (!S.status) return;
  const n = S.status.shape[S.status.axis];
  const k = currentIndex();
  const acc = S.status.accepted.includes(k) ? " · accepted" : "";
  $("slice-info").textContent = `slice ${k} / ${n - 1} (axis ${S.status.axis})${acc}`;
  document.querySelectorAll("#queue-list li").forEach((li) => {
    li.classList.toggle("current", Number(li.dataset.index) === k);
  });
}

function renderStatus() {
  const st = S.status;
  $("case-name").textContent = `${st.name} · ${st.shape.join("×")} · ${st.method} (${st.preset})`;
  $("undo").disabled = !st.can_undo;
  $("redo").disabled = !st.can_redo;
  $("download").href = api.routes.download(S.sid);
  $("download-slicer").href = `${api.routes.download(S.sid)}?format=seg.nrrd`;
  dicom.update(S.sid);
  $("predict-box").hidden = st.has_maps;
  $("maps-box").hidden = false;
  $("structures-box").hidden = false;
  if (structures.changed(st.structures)) structures.set(st.structures);
  renderSliceInfo();
}

function renderQueue() {
  const el = { list: $("queue-list"), budget: $("budget"), progress: $("progress"),
    progressText: $("progress-text"), stop: $("early-stop") };
  const status = S.sugg?.structure != null ? { ...S.status, queue: S.sugg.queue } : S.status;
  drawQueue(el, S.sugg, status, currentIndex(), goToSlice);
}

function setTool(name) {
  S.tool = name;
  document.querySelectorAll("[data-tool]").forEach((b) => b.classList.toggle("active", b.dataset.tool === name));
  ink.style.pointerEvents = name === "navigate" ? "none" : "auto";
  ink.style.cursor = name === "navigate" ? "default" : "crosshair";
}

function setUncertainty(show) {
  S.showUnc = show;
  $("show-unc").checked = show;
  if (S.geom) paintAll();
}

function setMaskShown(show) {
  S.showMask = show;
  $("show-mask").checked = show;
  if (S.geom) paintAll();
}

// ------------------------------------------------------------------ server calls (serialised)
// the busy indicator: shown while a server call is queued or running
function showBusy() {
  $("busy").hidden = S.pending === 0;
  document.body.classList.toggle("busy", S.pending > 0);
}

function enqueue(task) {
  S.pending++;
  showBusy();
  const run = S.chain.then(task).catch((err) => {
    console.error(err);
    say(err.detail ?? String(err), true);
  }).finally(() => {
    S.pending--;
    showBusy();
  });
  S.chain = run;
  return run;
}

async function afterAction(out, { follow = false } = {}) {
  S.status = out.status;
  if (out.slice) {
    applySlice(out.slice);
    if (follow && out.slice.axis === S.status.axis && out.slice.index !== currentIndex()) {
      goToSlice(out.slice.index);
    }
  }
  nv.refreshDrawing(true);
  renderStatus();
  renderQueue();
}

function nextFrame() {
  return new Promise((resolve) => requestAnimationFrame(() => resolve()));
}

// ------------------------------------------------------------------ opening a session
async function refreshLists() {
  const [sessions, files] = await Promise.all([api.getJSON(api.routes.sessions()), api.getJSON(api.routes.files())]);
  const ss = $("session-select");
  fillSelect(ss, sessions, (s) => s.id, (s) => `${s.name} (${new Date(s.updated * 1000).toLocaleString()})`);
  if (S.sid) ss.value = S.sid;
  fillSelect($("file-select"), files, (f) => f.path, (f) => f.path);
}

async function openSession(sid) {
  S.ready = false;
  say("opening…");
  if (sid !== S.sid) showModelWarning(null);
  S.sid = sid;
  history.replaceState(null, "", `#session=${encodeURIComponent(sid)}`);
  S.status = await api.getJSON(api.routes.session(sid));
  S.edited = new Set();
  renderStatus();
  await nv.loadVolumes([{ url: api.routes.volume(sid, "image.nii.gz"), name: "image.nii.gz" }]);
  S.geom = new Geometry(nv.volumes[0]);
  const shape = S.status.shape;
  if (S.geom.dimsFile.some((d, a) => d !== shape[a])) {
    throw new Error(`NiiVue read a ${S.geom.dimsFile.join("x")} image, the session has ${shape.join("x")}`);
  }
  const [mask, scr, unc] = await Promise.all([
    api.getBytes(api.routes.array(sid, "mask")),
    api.getBytes(api.routes.array(sid, "scribbles")),
    S.status.has_maps ? api.getBytes(api.routes.array(sid, "uncertainty")) : null,
  ]);
  S.mask = mask;
  S.scr = scr;
  S.unc = null;
  S.umax = 0;
  if (unc) {
    const u = new Float32Array(unc.buffer, unc.byteOffset, unc.byteLength / 4);
    let umax = 0;
    for (let i = 0; i < u.length; i++) if (u[i] > umax) umax = u[i];
    S.unc = u;
    S.umax = umax;
  }
  $("unc-max").textContent = S.umax ? S.umax.toPrecision(3) : "–";
  nv.setDrawingEnabled(false);
  nv.createEmptyDrawing();
  nv.setSliceType(planeSliceType(S.status.axis));
  S.structures = [];
  structures.set(S.status.structures); // colour table, uncertainty levels, then the drawing
  S.sugg = S.status.has_maps ? await api.getJSON(api.routes.suggestions(sid, S.scope)) : null;
  resizeInk();
  renderStatus();
  renderQueue();
  S.ready = true;
  say(S.status.has_maps ? "ready: press n for the next suggested slice" : "no prediction yet: run MG-Net");
}

/** the page's preset choice; "" = the server's val-chosen default */
function chosenPreset() {
  return $("preset-select").value || null;
}

/** the page's slice-order choice (segrefine.guidance.ORDERS) */
function chosenOrder() {
  return $("order-select").value || "gain";
}

async function createFromPath(path) {
  const body = { path, order: chosenOrder() };
  if (chosenPreset()) body.preset = chosenPreset();
  const st = await api.postJSON(api.routes.sessions(), body);
  await refreshLists();
  await openSession(st.id);
}

async function createFromUpload(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  if (chosenPreset()) form.append("preset", chosenPreset());
  form.append("order", chosenOrder());
  say(`uploading ${file.name}…`);
  const st = await api.postForm(api.routes.upload(), form);
  await refreshLists();
  await openSession(st.id);
}

// ------------------------------------------------------------------ verbs
function nextSuggestion() {
  return enqueue(async () => {
    const out = await api.postJSON(api.routes.next(S.sid, S.scope));
    if (structures.scopeId() === null) S.status.queue = out.queue;
    else if (S.sugg) S.sugg.queue = out.queue;
    if (out.index === null) {
      say(out.queue.stopped_early ? stopText(out.queue) : "every suggested slice within the budget was shown");
    } else {
      goToSlice(out.index);
      say(`suggested slice ${out.index}`);
    }
    renderQueue();
  });
}

function undo() {
  return enqueue(async () => afterAction(await api.postJSON(api.routes.undo(S.sid)), { follow: true }));
}

function redo() {
  return enqueue(async () => afterAction(await api.postJSON(api.routes.redo(S.sid)), { follow: true }));
}

function accept() {
  return enqueue(async () => {
    const k = currentIndex();
    const needed = S.edited.has(k) || sliceHasScribbles(k);
    const out = await api.postJSON(api.routes.accept(S.sid),
      { index: k, needed_refinement: needed, structure: structures.scopeId() });
    if (structures.scopeId() !== null) S.sugg = await api.getJSON(api.routes.suggestions(S.sid, S.scope));
    await afterAction(out);
    say(`slice ${k} accepted`);
    if (cohort.state.available) await cohort.refresh();
  });
}

function predict() {
  return enqueue(async () => {
    say("running MG-Net…");
    const warning = warningOf(await api.postJSON(api.routes.predict(S.sid)));
    await openSession(S.sid);
    showModelWarning(warning);
    if (warning) say("MG-Net ran on an image unlike its training data: see the warning", true);
  });
}

function loadMaps() {
  const picked = mapsForm();
  if (typeof picked === "string") return say(picked, true);
  return enqueue(async () => {
    say(`loading ${picked.names}…`);
    await api.postForm(api.routes.maps(S.sid), picked.form);
    clearMapsForm();
    showModelWarning(null);
    await openSession(S.sid);
    say(`maps loaded from ${picked.names}: press n for the next suggested slice`);
  });
}

// ------------------------------------------------------------------ scribble capture
let stroke = null;

function resizeInk() {
  const rect = glCanvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  ink.width = Math.round(rect.width * dpr);
  ink.height = Math.round(rect.height * dpr);
  ink.style.width = `${rect.width}px`;
  ink.style.height = `${rect.height}px`;
}

function clearInk() {
  ink.getContext("2d").clearRect(0, 0, ink.width, ink.height);
}

/** slice pixel [row, col] under a pointer event, or null */
function eventPixel(e) {
  const rect = ink.getBoundingClientRect();
  const f = canvasToFile(e.clientX - rect.left, e.clientY - rect.top);
  if (!f) return null;
  const [ar, ac] = S.geom.sliceAxes(S.status.axis);
  return [f[ar], f[ac]];
}

function inkLine(from, to) {
  const ctx = ink.getContext("2d");
  const dpr = window.devicePixelRatio || 1;
  ctx.strokeStyle = INK[S.tool];
  ctx.lineWidth = 3 * dpr;
  ctx.lineCap = "round";
  ctx.beginPath();
  ctx.moveTo(from[0] * dpr, from[1] * dpr);
  ctx.lineTo(to[0] * dpr, to[1] * dpr);
  ctx.stroke();
}

ink.addEventListener("pointerdown", (e) => {
  if (!S.ready || S.tool === "navigate" || e.button !== 0) return;
  const px = eventPixel(e);
  if (!px) return;
  ink.setPointerCapture(e.pointerId);
  const rect = ink.getBoundingClientRect();
  const pos = [e.clientX - rect.left, e.clientY - rect.top];
  stroke = { tool: S.tool, index: currentIndex(), pixels: new Set(), last: px, lastPos: pos,
    structure: S.active, overwrite: S.overwrite };
  segment(px, px, stroke.pixels);
  inkLine(pos, pos);
  e.preventDefault();
});

ink.addEventListener("pointermove", (e) => {
  if (!stroke) return;
  const rect = ink.getBoundingClientRect();
  const pos = [e.clientX - rect.left, e.clientY - rect.top];
  const px = eventPixel(e);
  inkLine(stroke.lastPos, pos);
  stroke.lastPos = pos;
  if (px) {
    segment(stroke.last, px, stroke.pixels);
    stroke.last = px;
  }
});

function endStroke(e) {
  if (!stroke) return;
  const t0 = performance.now();
  const s = stroke;
  stroke = null;
  if (e && ink.hasPointerCapture(e.pointerId)) ink.releasePointerCapture(e.pointerId);
  const points = [...s.pixels].map((p) => p.split(",").map(Number));
  const wasEdited = S.edited.has(s.index);
  S.edited.add(s.index);
  say(`refining slice ${s.index}…`);
  enqueue(async () => {
    let out;
    try {
      out = await api.postJSON(api.routes.scribbles(S.sid), {
        index: s.index, axis: S.status.axis, label: TOOLS[s.tool], points, radius: S.radius, refine: true,
        structure: s.structure, overwrite: s.overwrite,
      });
    } catch (err) {
      // not stored: the ink must not stay as if it were
      clearInk();
      if (!wasEdited) S.edited.delete(s.index);
      throw new api.ApiError(err.status ?? 0, `stroke not saved: ${err.detail ?? err}`);
    }
    await afterAction(out);
    await nextFrame();
    clearInk();
    const ms = performance.now() - t0;
    const server = out.changes.reduce((a, c) => a + c.seconds, 0) * 1000;
    S.timings.push({ ms, serverMs: server, points: points.length });
    say(`refined slice ${s.index} in ${ms.toFixed(0)} ms (server ${server.toFixed(0)} ms)`);
  });
}

ink.addEventListener("pointerup", endStroke);
ink.addEventListener("pointercancel", endStroke);
ink.addEventListener("wheel", (e) => {
  e.preventDefault();
  goToSlice(currentIndex() + (e.deltaY > 0 ? -1 : 1));
}, { passive: false });
window.addEventListener("resize", resizeInk);
new ResizeObserver(resizeInk).observe(glCanvas);

// ------------------------------------------------------------------ controls and keys
document.querySelectorAll("[data-tool]").forEach((b) => b.addEventListener("click", () => setTool(b.dataset.tool)));
$("radius").addEventListener("input", (e) => {
  S.radius = Number(e.target.value);
  $("radius-value").textContent = S.radius;
});

$("next").addEventListener("click", nextSuggestion);
$("undo").addEventListener("click", undo);
$("redo").addEventListener("click", redo);
$("accept").addEventListener("click", accept);
$("predict").addEventListener("click", predict);
$("load-maps").addEventListener("click", loadMaps);
$("show-unc").addEventListener("change", (e) => setUncertainty(e.target.checked));
$("show-mask").addEventListener("change", (e) => setMaskShown(e.target.checked));
$("open-session").addEventListener("click", () => {
  const sid = $("session-select").value;
  if (sid) openSession(sid).catch((err) => say(err.detail ?? String(err), true));
});
$("delete-session").addEventListener("click", () => {
  const sid = $("session-select").value;
  const name = $("session-select").selectedOptions[0]?.textContent ?? sid;
  if (!sid || !window.confirm(`Delete the session ${name} and its edits?`)) return;
  enqueue(async () => {
    await api.deleteJSON(api.routes.session(sid));
    if (sid === S.sid) {
      location.assign("/");  // the open session is gone: start from an empty page
      return;
    }
    await refreshLists();
    say(`deleted session ${name}`);
  });
});
$("create-from-file").addEventListener("click", () => {
  const path = $("file-select").value;
  if (path) createFromPath(path).catch((err) => say(err.detail ?? String(err), true));
});
$("upload").addEventListener("change", (e) => {
  const file = e.target.files[0];
  if (file) createFromUpload(file).catch((err) => say(err.detail ?? String(err), true));
  e.target.value = "";
});

const KEYS = {
  n: nextSuggestion,
  f: () => setTool("fg"),
  b: () => setTool("bg"),
  e: () => setTool("erase"),
  v: () => setTool("navigate"),
  z: undo,
  y: redo,
  a: accept,
  u: () => setUncertainty(!S.showUnc),
  m: () => setMaskShown(!S.showMask),
  ArrowUp: () => goToSlice(currentIndex() + 1),
  ArrowDown: () => goToSlice(currentIndex() - 1),
  PageUp: () => goToSlice(currentIndex() + 1),
  PageDown: () => goToSlice(currentIndex() - 1),
  ...Object.fromEntries([1, 2, 3, 4, 5, 6, 7, 8, 9].map((n) => [String(n), () => {
    if (S.structures[n - 1]) structures.setActive(S.structures[n - 1].id);
  }])),
  "[": () => nudge($("radius"), -1),
  "]": () => nudge($("radius"), +1),
};

bindKeys(KEYS, () => S.ready);

// ------------------------------------------------------------------ start
const cohort = initCohort({
  openSession: async (sid) => {
    await openSession(sid);
    await refreshLists();
  },
  goToSlice,
  currentSid: () => S.sid,
  currentIndex: () => (S.ready ? currentIndex() : null),
  say,
});
window.segrefine.cohort = cohort;
const dicom = initDicom({
  openSession,
  refreshLists,
  options: () => ({ order: chosenOrder(), ...(chosenPreset() ? { preset: chosenPreset() } : {}) }),
  say,
});
window.segrefine.dicom = dicom;
setTool("fg");
setUncertainty(true);
await refreshLists().catch((err) => say(err.detail ?? String(err), true));
await cohort.refresh();
await dicom.refresh();
const fromHash = new URLSearchParams(location.hash.slice(1)).get("session");
if (fromHash) {
  await openSession(fromHash).catch((err) => say(`cannot open session: ${err.detail ?? err}`, true));
} else {
  say("open a session, or start one from a case or an upload");
}
