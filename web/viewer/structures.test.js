// node --test viewer/  (run by tests/test_viewer_geometry.py)
import { test } from "node:test";
import assert from "node:assert/strict";
import { V } from "./draw.js";
import { hexToRgb, indexOfId, layout, makeStructureLut, quantise, rgbToHex, strokeCodes } from "./structures.js";

const two = [{ id: 1, name: "anterior", color: [128, 174, 128] }, { id: 2, name: "posterior", color: [241, 214, 145] }];

test("one structure lays the drawing out as the single-label viewer did", () => {
  const L = layout(1);
  assert.deepEqual([L.outline(0), L.out0, L.in0(0), L.levels], [V.outline, V.out0, V.in0, V.levels]);
  assert.equal(makeStructureLut(two.slice(0, 1)).I.length, 4 + 2 * V.levels);
});

test("every byte value is used once and fits in 256, up to 100 structures", () => {
  for (const k of [1, 2, 3, 10, 50, 100]) {
    const s = Array.from({ length: k }, (_, i) => ({ id: i + 1, name: `s${i}`, color: [i, 2 * i, 3 * i] }));
    const lut = makeStructureLut(s);
    assert.equal(new Set(lut.I).size, lut.I.length, `k=${k}`);
    assert.ok(lut.I.every((v) => v >= 0 && v < 256), `k=${k}`);
    assert.ok(layout(k).levels >= 1);
  }
  const lut = makeStructureLut(two);
  const i = lut.I.indexOf(layout(2).outline(1));
  assert.deepEqual([lut.R[i], lut.G[i], lut.B[i], lut.A[i]], [241, 214, 145, 255]);
});

test("stroke codes, id lookup, quantisation and colours", () => {
  assert.deepEqual(strokeCodes(1), [1, 2]);
  assert.deepEqual(strokeCodes(2), [3, 4]);
  const idx = indexOfId(two);
  assert.deepEqual([idx[0], idx[1], idx[2], idx[3]], [-1, 0, 1, -1]);
  assert.deepEqual([...quantise(new Float32Array([0, 0.5, 1]), 1, 5)], [0, 2, 4]);
  assert.deepEqual([...quantise(new Float32Array([0, 1]), 0, 5)], [0, 0]);
  assert.deepEqual(hexToRgb("#ff8000"), [255, 128, 0]);
  assert.equal(rgbToHex([255, 128, 0]), "#ff8000");
  assert.equal(hexToRgb("red"), null);
});
