// node --test viewer/  (run by tests/test_viewer_geometry.py)
// Geometry's index maths against a copy of NiiVue's own reordering loop
// (img2RAS in @niivue/niivue 0.69.0, src/nvimage/ImageOrientation.ts) for all 48
// signed axis permutations.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Geometry } from "./geometry.js";

function niivueImg2RAS(img, dims, perm) { // dims = [d0, d1, d2], perm 1-based signed
  const aperm = perm.map(Math.abs);
  const outdim = [dims[aperm[0] - 1], dims[aperm[1] - 1], dims[aperm[2] - 1]];
  const inStep = [1, dims[0], dims[0] * dims[1]];
  const outStep = [inStep[aperm[0] - 1], inStep[aperm[1] - 1], inStep[aperm[2] - 1]];
  const outStart = [0, 0, 0];
  for (let p = 0; p < 3; p++) {
    if (perm[p] < 0) {
      outStart[p] = outStep[p] * (outdim[p] - 1);
      outStep[p] = -outStep[p];
    }
  }
  const out = new Int32Array(img.length);
  let j = 0;
  for (let z = 0; z < outdim[2]; z++) {
    for (let y = 0; y < outdim[1]; y++) {
      for (let x = 0; x < outdim[0]; x++) {
        out[j++] = img[outStart[0] + x * outStep[0] + outStart[1] + y * outStep[1] + outStart[2] + z * outStep[2]];
      }
    }
  }
  return { out, outdim };
}

const PERMS = [[1, 2, 3], [1, 3, 2], [2, 1, 3], [2, 3, 1], [3, 1, 2], [3, 2, 1]];

test("file <-> RAS voxel order matches NiiVue's img2RAS for every signed permutation", () => {
  const dims = [3, 4, 5];
  const img = Int32Array.from({ length: 60 }, (_, i) => i); // value = file index
  for (const base of PERMS) {
    for (let signs = 0; signs < 8; signs++) {
      const perm = base.map((a, p) => ((signs >> p) & 1 ? -a : a));
      const { out, outdim } = niivueImg2RAS(img, dims, perm);
      const g = new Geometry({ hdr: { dims: [3, ...dims] }, permRAS: perm, dimsRAS: [3, ...outdim] });
      for (let i = 0; i < dims[0]; i++) {
        for (let j = 0; j < dims[1]; j++) {
          for (let k = 0; k < dims[2]; k++) {
            const f = [i, j, k];
            const r = g.fileToRas(f);
            const ras = r[0] + r[1] * outdim[0] + r[2] * outdim[0] * outdim[1];
            assert.equal(out[ras], g.fileIndex(f), `perm ${perm} voxel ${f}`);
            assert.equal(g.rasIndexOfFile(f), ras);
            assert.deepEqual(g.rasToFile(r), f);
            assert.deepEqual(g.fracToFile(g.fileToFrac(f)), f);
          }
        }
      }
    }
  }
});
