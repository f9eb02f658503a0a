// The model side of the page: the model-card warning a prediction answers with, and the
// form that uploads another model's maps (probability, uncertainty, optional segmentation).

import { $ } from "./dom.js";

const MAP_INPUTS = { prob: "maps-prob", uncertainty: "maps-unc", segmentation: "maps-seg" };

/** show (or, with null, hide) the one-line warning that the image is unlike the model's training data */
export function showModelWarning(text) {
  $("model-warning").textContent = text ?? "";
  $("model-warning").hidden = !text;
}

/** the warning of a predict answer (ActionOut), or null */
export function warningOf(out) {
  return out.changes.map((c) => c.warning).find((w) => w) ?? null;
}

/** the chosen map files as a multipart form, or a message saying what is missing */
export function mapsForm() {
  const files = Object.fromEntries(Object.entries(MAP_INPUTS).map(([k, id]) => [k, $(id).files[0]]));
  if (!files.prob || !files.uncertainty) return "choose a probability file and an uncertainty file first";
  const form = new FormData();
  for (const [field, file] of Object.entries(files)) if (file) form.append(field, file, file.name);
  return { form, names: `${files.prob.name} and ${files.uncertainty.name}` };
}

export function clearMapsForm() {
  for (const id of Object.values(MAP_INPUTS)) $(id).value = "";
}
