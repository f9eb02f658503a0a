// The suggestion queue panel: the ranked slices with the score of the session's
// order (gain: expected wrong voxels Σ min(p, 1 - p) with the end prior; nu: ν;
// nu-naive: ν*), the budget, the progress and the state of the order's own stop rule.

const SCORES = {
  gain: { key: "score", name: "expected wrong voxels + end prior", digits: 1 },
  nu: { key: "nu", name: "ν", digits: 3 },
  "nu-naive": { key: "nu_naive", name: "ν*", digits: 2 },
};

/** the score the slices are ranked by, for a suggestions answer */
export function scoreOf(sugg) {
  return SCORES[sugg.order] ?? SCORES.nu;
}

/** one line on the queue's stop rule (expected remaining gain, or clean slices in a row) */
export function stopText(q) {
  const follow = q.front?.length ? ` · next: slice ${q.front[0]}, beside a corrected slice` : "";
  if (q.stop_dice != null) {
    const left = q.remaining_dice == null ? "?" : `${(100 * q.remaining_dice).toFixed(1)}`;
    const limit = `${+(100 * q.stop_dice).toFixed(2)}`;
    if (q.stopped_early) return `stopped: the slices left hold ${left} Dice points of expected errors (stop below ${limit})`;
    if (q.done) return "budget used: every suggested slice was shown";
    return `early stop when the slices left hold < ${limit} Dice points of expected errors (now ${left})${follow}`;
  }
  if (q.stop_remaining != null) {
    const left = q.remaining_fraction == null ? "?" : `${Math.round(100 * q.remaining_fraction)} %`;
    const limit = `${Math.round(100 * q.stop_remaining)} %`;
    if (q.stopped_early) return `stopped: the slices left hold ${left} of the expected wrong voxels (stop below ${limit})`;
    if (q.done) return "budget used: every suggested slice was shown";
    return `early stop when the slices left hold < ${limit} of the expected wrong voxels (now ${left})`;
  }
  const n = q.patience ?? 3;
  if (q.stopped_early) return `stopped early: ${n} suggested slices in a row needed no refinement`;
  if (q.done) return "budget used: every suggested slice was shown";
  return `early stop: ${q.streak} / ${n} slices in a row needed no refinement`;
}

/** fill the panel's elements (`el`: list, budget, progress, progressText, stop) */
export function renderQueue(el, sugg, status, current, onPick) {
  if (!sugg || !status) {
    el.list.replaceChildren();
    return;
  }
  const q = status.queue || sugg.queue;
  const accepted = new Set(status.accepted);
  const shown = new Set(q.shown);
  const score = scoreOf(sugg);
  const value = (s) => s[score.key] ?? 0;
  const top = Math.max(1e-12, ...sugg.slices.map(value));
  el.budget.textContent = `budget M' = ${sugg.budget} → ${sugg.budget_slices} of ${sugg.slices.length} slices`
    + ` · order ${sugg.order} (${score.name})`;
  const done = sugg.slices.filter((s) => s.in_budget && accepted.has(s.index)).length;
  el.progress.max = sugg.budget_slices;
  el.progress.value = done;
  el.progressText.textContent = `${done} / ${sugg.budget_slices} checked · ${q.shown.length} suggested`;
  el.stop.textContent = stopText(q);
  el.stop.classList.toggle("stopped", q.stopped_early || q.done);
  const items = sugg.slices.map((s, rank) => {
    const li = document.createElement("li");
    li.dataset.index = s.index;
    li.classList.toggle("out", !s.in_budget);
    li.classList.toggle("accepted", accepted.has(s.index));
    li.classList.toggle("shown", shown.has(s.index));
    li.classList.toggle("current", s.index === current);
    const exp = s.expected_errors == null ? "" : `, expected wrong voxels ${s.expected_errors.toFixed(1)}`;
    li.title = `slice ${s.index}: ν = ${s.nu.toFixed(4)}, ν* = ${s.nu_naive.toFixed(2)}${exp}, area ${s.area}`;
    const label = document.createElement("span");
    label.className = "idx";
    label.textContent = `${rank + 1}. #${s.index}`;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${(100 * value(s)) / top}%`;
    bar.append(fill);
    const val = document.createElement("span");
    val.className = "nu";
    val.textContent = value(s).toFixed(score.digits);
    const mark = document.createElement("span");
    mark.className = "mark";
    mark.textContent = accepted.has(s.index) ? "✓" : shown.has(s.index) ? "•" : "";
    li.append(label, bar, val, mark);
    li.addEventListener("click", () => onPick(s.index));
    return li;
  });
  el.list.replaceChildren(...items);
}
