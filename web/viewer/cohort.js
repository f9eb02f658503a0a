// The cohort panel (`segrefine serve --cohort OUT`): the cohort's cases in review order
// (highest expected gain first) with their expected wrong voxels, ν and review status, each
// with its ranked slices. A click on a case opens it as a web session with the cohort's maps
// (POST /api/cohort/cases/{case}/session: the same session again on a later click); a click on
// a ranked slice opens the case if needed and goes to that slice. Hidden when the server has
// no cohort (GET /api/cohort answers 404).

import * as api from "./api.js";
import { $ } from "./dom.js";

const PAGE = 100;

/** the one-word status of a cohort entry and its longer title */
export function caseStatus(c, openSid) {
  if (c.error !== undefined) return { text: "failed", title: `failed in the cohort run: ${c.error ?? "no message"}` };
  if (!c.session) return { text: "to review", title: "no session yet: click to open the case" };
  const n = c.accepted ?? 0;
  const open = c.session === openSid ? " (open)" : "";
  return { text: `${n} accepted${open}`, title: `session ${c.session}: ${n} slices accepted${open}` };
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/**
 * Wire the panel. `hooks`: openSession(sid) -> Promise (opens a session in the viewer),
 * goToSlice(k), currentSid() -> the open session's id, currentIndex() -> its slice shown,
 * say(text, isError).
 * Returns { refresh, openCase, goToCaseSlice, state } (state exposed for tests).
 */
export function initCohort(hooks) {
  const state = { available: false, total: 0, cases: [], failed: [], totalGain: 0, opening: null };

  async function load(offset = 0) {
    const page = await api.getJSON(`${api.routes.cohort()}?offset=${offset}&limit=${PAGE}`);
    state.total = page.total;
    state.totalGain = page.total_expected_gain;
    state.failed = page.failed;
    state.cases = offset === 0 ? page.cases : state.cases.concat(page.cases);
  }

  async function refresh() {
    try {
      await load(0);
      state.available = true;
    } catch (err) {
      state.available = false;
      if (err.status !== 404) hooks.say(`cohort: ${err.detail ?? err}`, true);
    }
    render();
  }

  async function openCase(name) {
    const c = state.cases.find((x) => x.case === name);
    if (!c) return;
    state.opening = name;
    render();
    hooks.say(`opening cohort case ${name}…`);
    try {
      const st = await api.postJSON(api.routes.cohortCase(name));
      c.session = st.id;
      await hooks.openSession(st.id);
    } finally {
      state.opening = null;
      await refresh();
    }
  }

  async function goToCaseSlice(name, index) {
    const c = state.cases.find((x) => x.case === name);
    if (!c) return;
    if (!c.session || c.session !== hooks.currentSid()) await openCase(name);
    hooks.goToSlice(index);
    render();
    hooks.say(`${name}: slice ${index}`);
  }

  function report(promise) {
    promise.catch((err) => hooks.say(err.detail ?? String(err), true));
  }

  function render() {
    const box = $("cohort-box");
    box.hidden = !state.available;
    if (!state.available) return;
    const open = hooks.currentSid();
    const failed = state.failed.length ? ` · ${state.failed.length} failed` : "";
    $("cohort-summary").textContent = `${state.total} cases${failed} · expected wrong voxels `
      + `${state.totalGain.toFixed(0)} in all, highest first`;
    const rows = state.cases.map((c) => {
      const li = el("li");
      li.dataset.case = c.case;
      li.classList.toggle("current", !!c.session && c.session === open);
      li.classList.toggle("opening", state.opening === c.case);
      const head = el("button", "case");
      head.type = "button";
      head.title = `open ${c.case} for review (its image with the cohort's label and uncertainty maps)`;
      head.append(el("span", "rank", `${c.rank}.`), el("span", "name", c.case));
      head.addEventListener("click", () => report(openCase(c.case)));
      const gain = el("span", "gain", `${c.expected_gain.toFixed(1)} exp. wrong`);
      gain.title = "expected wrong voxels Σ min(p, 1 − p): what a review can fix";
      const nu = el("span", "nu", `ν ${c.uncertainty == null ? "–" : c.uncertainty.toFixed(3)}`);
      nu.title = "ν of the whole volume, ΣU / (ΣY + ζ)";
      const st = caseStatus(c, open);
      const status = el("span", "status", st.text);
      status.title = st.title;
      const current = c.session && c.session === open ? hooks.currentIndex() : null;
      const slices = el("div", "slices");
      slices.append(...c.slices.map(([k, e]) => {
        const b = el("button", "slice", `#${k}`);
        b.type = "button";
        b.dataset.slice = k;
        b.classList.toggle("current", k === current);
        b.title = `slice ${k} (axis ${c.axis ?? 2}): expected wrong voxels ${e.toFixed(1)}`;
        b.addEventListener("click", () => report(goToCaseSlice(c.case, k)));
        return b;
      }));
      li.append(head, gain, nu, status, slices);
      return li;
    });
    for (const f of state.failed) {
      const li = el("li", "failed");
      li.dataset.case = f.case;
      const st = caseStatus(f, open);
      const name = el("span", "name", f.case);
      const status = el("span", "status", st.text);
      status.title = st.title;
      li.append(name, status);
      rows.push(li);
    }
    $("cohort-list").replaceChildren(...rows);
    const more = $("cohort-more");
    more.hidden = state.cases.length >= state.total;
    more.textContent = `show ${Math.min(PAGE, state.total - state.cases.length)} more`;
  }

  $("cohort-more").addEventListener("click", () => report(load(state.cases.length).then(render)));
  return { refresh, openCase, goToCaseSlice, state, render };
}
