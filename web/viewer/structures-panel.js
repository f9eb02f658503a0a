// The structures panel: the session's structures in their colours, the active one (whose
// strokes are drawn and sent), lock/overwrite, a new structure, a label map upload and the
// queue's scope (the whole mask or one structure). Pure drawing layout: structures.js.

import * as api from "./api.js";
import { $, fillSelect, say } from "./dom.js";
import { hexToRgb, indexOfId, layout, makeStructureLut, quantise, rgbToHex } from "./structures.js";

/** wire the panel to the viewer's state `S` and verbs; returns what app.js calls */
export function initStructures({ S, nv, enqueue, afterAction, openSession, paintAll, renderQueue }) {
  function structuresChanged(list) {
    return JSON.stringify(list ?? []) !== JSON.stringify(S.structures);
  }

  /** take the session's structures: drawing colours, uncertainty levels, the list and the queue's scope */
  function setStructures(list) {
    S.structures = list?.length ? list : [{ id: 1, name: "foreground", color: [128, 174, 128] }];
    S.idx = indexOfId(S.structures);
    S.lay = layout(S.structures.length);
    if (S.idx[S.active] < 0) S.active = S.structures[0].id;
    if (S.scope && S.idx[Number(S.scope)] < 0) S.scope = "";
    S.ulev = S.unc ? quantise(S.unc, S.umax, S.lay.levels) : null;
    renderStructures();
    if (S.geom && nv.drawBitmap) {
      nv.setDrawColormap(makeStructureLut(S.structures));
      paintAll();
    }
  }

  function renderStructures() {
    const items = S.structures.map((s, n) => {
      const li = document.createElement("li");
      li.dataset.id = s.id;
      li.classList.toggle("active", s.id === S.active);
      const input = document.createElement("input");
      input.type = "radio";
      input.name = "structure";
      input.value = s.id;
      input.checked = s.id === S.active;
      input.addEventListener("change", () => setActive(s.id));
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = rgbToHex(s.color);
      const label = document.createElement("label");
      label.append(input, sw, ` ${s.id} · ${s.name}`);
      if (n < 9) label.title = `active structure (${n + 1})`;
      li.append(label);
      return li;
    });
    $("structure-list").replaceChildren(...items);
    fillSelect($("queue-scope"), [{ id: "", name: "all structures" }, ...S.structures],
      (s) => s.id, (s) => (s.id === "" ? s.name : `${s.id} · ${s.name}`));
    $("queue-scope").value = S.scope;
  }

  function setActive(id) {
    if (S.idx[id] < 0) return;
    S.active = id;
    renderStructures();
    if (S.geom) paintAll(); // the strokes drawn are the active structure's
    const s = S.structures[S.idx[id]];
    say(`active structure: ${s.name} (others ${S.overwrite ? "overwritten" : "locked"})`);
  }

  function addStructure() {
    const name = $("new-structure-name").value.trim();
    if (!name) return say("name the new structure first", true);
    const color = hexToRgb($("new-structure-color").value);
    return enqueue(async () => {
      const out = await api.postJSON(api.routes.structures(S.sid), { name, color });
      $("new-structure-name").value = "";
      const added = out.status.structures.find((s) => s.name === name);
      if (added) S.active = added.id;
      await afterAction(out);
      say(`structure ${name} added: strokes now draw it`);
    });
  }

  function loadLabelMap(file) {
    const form = new FormData();
    form.append("file", file, file.name);
    return enqueue(async () => {
      say(`loading the label map ${file.name}…`);
      await api.postForm(api.routes.labels(S.sid), form);
      await openSession(S.sid);
      say(`label map ${file.name} loaded: ${S.structures.length} structure(s)`);
    });
  }

  async function setScope(scope) {
    S.scope = scope;
    if (S.status?.has_maps) S.sugg = await api.getJSON(api.routes.suggestions(S.sid, S.scope));
    renderQueue();
  }

  /** the structure whose queue the next / accept verbs feed (null: the whole mask's) */
  function scopeId() {
    return S.scope === "" ? null : Number(S.scope);
  }

  $("overwrite").addEventListener("change", (e) => {
    S.overwrite = e.target.checked;
    say(S.overwrite ? "overwrite: strokes take other structures' voxels" : "lock: other structures' voxels are kept");
  });
  $("add-structure").addEventListener("click", addStructure);
  $("labels-upload").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file && S.sid) loadLabelMap(file);
    e.target.value = "";
  });
  $("queue-scope").addEventListener("change", (e) => {
    enqueue(() => setScope(e.target.value));
  });
  return { changed: structuresChanged, set: setStructures, setActive, scopeId };
}
