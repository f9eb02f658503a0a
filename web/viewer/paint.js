// The mask, the strokes and the uncertainty in NiiVue's drawing bitmap (RAS voxel order,
// see geometry.js), from the viewer's state S: S.geom, S.mask (label map, file order),
// S.scr (strokes, 2 id - 1 / 2 id per structure), S.ulev, S.lay / S.idx (structures.js).

import { strokeCodes } from "./structures.js";

/** rewrite slice `index` along file `axis` of the drawing bitmap `bmp` */
export function paintSlice(S, bmp, axis, index) {
  const g = S.geom;
  const [ar, ac] = g.sliceAxes(axis);
  const h = g.dimsFile[ar];
  const w = g.dimsFile[ac];
  const fs = g.fileStride;
  const rs = g.rasStrideOf;
  const f0 = index * fs[axis];
  const r0 = g.rasOffset + index * rs[axis];
  const m = S.mask;
  const showMask = S.showMask;
  const ulev = S.showUnc && S.ulev ? S.ulev : null;
  const V = S.lay;
  const [fgCode, bgCode] = strokeCodes(S.active); // the active structure's strokes are drawn
  for (let r = 0; r < h; r++) {
    for (let c = 0; c < w; c++) {
      const fi = f0 + r * fs[ar] + c * fs[ac];
      const s = S.scr[fi];
      let v;
      if (s === fgCode) v = V.fg;
      else if (s === bgCode) v = V.bg;
      else {
        const L = ulev ? ulev[fi] : 0;
        const id = m[fi];
        const i = id ? S.idx[id] : -1;
        if (showMask && i >= 0) {
          const edge = r === 0 || c === 0 || r === h - 1 || c === w - 1 ||
            m[fi - fs[ar]] !== id || m[fi + fs[ar]] !== id || m[fi - fs[ac]] !== id || m[fi + fs[ac]] !== id;
          v = edge ? V.outline(i) : V.in0(i) + L;
        } else {
          v = L ? V.out0 + L : V.none;
        }
      }
      bmp[r0 + r * rs[ar] + c * rs[ac]] = v;
    }
  }
}

/** whether slice `index` along the session axis holds a stroke (of any structure) */
export function sliceHasScribbles(S, index) {
  const g = S.geom;
  const axis = S.status.axis;
  const [ar, ac] = g.sliceAxes(axis);
  const fs = g.fileStride;
  for (let r = 0; r < g.dimsFile[ar]; r++) {
    for (let c = 0; c < g.dimsFile[ac]; c++) {
      if (S.scr[index * fs[axis] + r * fs[ar] + c * fs[ac]]) return true;
    }
  }
  return false;
}

/** copy a SliceOut's decoded `mask` and `scr` (C order, sl.shape) into S.mask / S.scr */
export function copySlice(S, sl, mask, scr) {
  const g = S.geom;
  const [ar, ac] = g.sliceAxes(sl.axis);
  const [h, w] = sl.shape;
  const fs = g.fileStride;
  const f0 = sl.index * fs[sl.axis];
  for (let r = 0; r < h; r++) {
    for (let c = 0; c < w; c++) {
      const fi = f0 + r * fs[ar] + c * fs[ac];
      S.mask[fi] = mask[r * w + c];
      S.scr[fi] = scr[r * w + c];
    }
  }
}
