// Several structures in the drawing (pure functions, tested by structures.test.js).
//
// The session's mask is a label map (0 background, a structure id per voxel). The drawing
// bitmap holds one byte per voxel coloured by a 256-entry table, so its values are laid out
// for the session's K structures:
//   0 nothing · 1 foreground stroke · 2 background stroke (of the active structure)
//   3 .. 3+K-1            outline of structure i (its colour)
//   out0 .. out0+L-1      uncertainty level outside every structure
//   in0(i) .. in0(i)+L-1  inside structure i: its colour under the uncertainty level
// with L levels, as many as fit: L = min(124, floor((253 - K) / (K + 1))); one structure
// gives the single-label viewer's table (outline 3, out0 4, in0 128, 124 levels).
// Strokes are stored per structure on the server: 2 id - 1 foreground, 2 id background.

import { heat, over } from "./draw.js";

export const MAX_LEVELS = 124;

/** the byte layout of the drawing for `k` structures */
export function layout(k) {
  const n = Math.max(1, k);
  const levels = Math.max(1, Math.min(MAX_LEVELS, Math.floor((253 - n) / (n + 1))));
  const out0 = 3 + n;
  return { none: 0, fg: 1, bg: 2, outline: (i) => 3 + i, out0, in0: (i) => out0 + levels * (1 + i), levels };
}

/** the scribble volume's values of a foreground and a background stroke of structure `id` */
export function strokeCodes(id) {
  return [2 * id - 1, 2 * id];
}

/** id -> position in `structures` (Int16Array of 256, -1 where no structure) */
export function indexOfId(structures) {
  const out = new Int16Array(256).fill(-1);
  structures.forEach((s, i) => { out[s.id] = i; });
  return out;
}

/** NiiVue's colour table (R, G, B, A, I, labels) for `structures` ({id, name, color: [r, g, b]}) */
export function makeStructureLut(structures) {
  const L = layout(structures.length);
  const R = [], G = [], B = [], A = [], I = [], labels = [];
  const put = (v, rgba, label) => {
    R.push(rgba[0]); G.push(rgba[1]); B.push(rgba[2]); A.push(rgba[3]); I.push(v); labels.push(label);
  };
  put(L.none, [0, 0, 0, 0], "");
  put(L.fg, [40, 230, 60, 255], "foreground scribble");
  put(L.bg, [30, 150, 255, 255], "background scribble");
  structures.forEach((s, i) => put(L.outline(i), [...s.color, 255], `${s.name} outline`));
  const levelOf = (l) => (L.levels === 1 ? 0 : l / (L.levels - 1));
  for (let l = 0; l < L.levels; l++) put(L.out0 + l, heat(levelOf(l)), `uncertainty ${l}`);
  structures.forEach((s, i) => {
    const fill = [...s.color, 70];
    for (let l = 0; l < L.levels; l++) put(L.in0(i) + l, over(heat(levelOf(l)), fill), `${s.name}, uncertainty ${l}`);
  });
  return { R, G, B, A, I, labels };
}

/** uncertainty (Float32Array) quantised to 0..levels-1 against its maximum `umax` */
export function quantise(u, umax, levels) {
  const out = new Uint8Array(u.length);
  if (!(umax > 0) || levels < 2) return out;
  const scale = (levels - 1) / umax;
  for (let i = 0; i < u.length; i++) out[i] = Math.min(levels - 1, Math.max(0, Math.round(u[i] * scale)));
  return out;
}

/** a CSS colour "#rrggbb" -> [r, g, b], and back */
export function hexToRgb(hex) {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  return m ? [1, 2, 3].map((i) => parseInt(m[i], 16)) : null;
}

export function rgbToHex(rgb) {
  return `#${rgb.map((c) => c.toString(16).padStart(2, "0")).join("")}`;
}
