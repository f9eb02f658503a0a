// What the viewer draws over the image, as pure functions (tested by draw.test.js).
//
// Everything drawn over the image lives in NiiVue's drawing bitmap (one byte per
// voxel, RAS order), coloured by a 256-entry table. NiiVue composites overlay
// volumes above the drawing, so a heat-map overlay would tint the scribbles and
// re-uploading overlay volumes costs ~40 ms; a single drawing keeps the layers in
// the right order and a refined slice redraws in well under a millisecond.

/** the drawing's byte values: strokes, the outline, and 124 uncertainty levels outside / inside the mask */
export const V = { none: 0, fg: 1, bg: 2, outline: 3, out0: 4, in0: 128, levels: 124 };

/** uncertainty colour and opacity (RGBA, 0..255), t in [0, 1] */
export function heat(t) {
  return [255, Math.round(40 + 215 * t), Math.round(60 * t * t), t < 0.04 ? 0 : Math.round(60 + 150 * t)];
}

/** "top over bottom", straight alpha, 0..255 */
export function over(top, bottom) {
  const at = top[3] / 255;
  const ab = bottom[3] / 255;
  const a = at + ab * (1 - at);
  if (a === 0) return [0, 0, 0, 0];
  const mix = (i) => Math.round((top[i] * at + bottom[i] * ab * (1 - at)) / a);
  return [mix(0), mix(1), mix(2), Math.round(255 * a)];
}

/** pixels of the segment a-b on the slice grid (Bresenham), both ends included, added to the set `out` as "r,c" */
export function segment(a, b, out) {
  let [r0, c0] = a;
  const [r1, c1] = b;
  const dr = Math.abs(r1 - r0);
  const dc = Math.abs(c1 - c0);
  const sr = r0 < r1 ? 1 : -1;
  const sc = c0 < c1 ? 1 : -1;
  let err = dc - dr;
  for (;;) {
    out.add(`${r0},${c0}`);
    if (r0 === r1 && c0 === c1) return;
    const e2 = 2 * err;
    if (e2 > -dr) { err -= dr; c0 += sc; }
    if (e2 < dc) { err += dc; r0 += sr; }
  }
}
