// node --test viewer/  (run by tests/test_viewer_geometry.py)
import { test } from "node:test";
import assert from "node:assert/strict";
import { V, heat, over, segment } from "./draw.js";
import { makeStructureLut } from "./structures.js";
import { scoreOf, stopText } from "./queue.js";

test("the drawing's colour table has one entry per byte value it uses", () => {
  const lut = makeStructureLut([{ id: 1, name: "mask", color: [255, 60, 60] }]);
  assert.equal(lut.I.length, 4 + 2 * V.levels);
  assert.deepEqual([lut.R[1], lut.G[1], lut.B[1], lut.A[1]], [40, 230, 60, 255]);
  assert.ok(lut.I.every((v) => v >= 0 && v < 256));
  assert.equal(new Set(lut.I).size, lut.I.length);
});

test("heat is transparent when certain and opaque when uncertain; over composites", () => {
  assert.equal(heat(0)[3], 0);
  assert.ok(heat(1)[3] > heat(0.5)[3]);
  assert.deepEqual(over([0, 0, 0, 0], [10, 20, 30, 255]), [10, 20, 30, 255]);
  assert.deepEqual(over([0, 0, 0, 0], [0, 0, 0, 0]), [0, 0, 0, 0]);
});

test("segment covers every pixel between its ends, both included", () => {
  const out = new Set();
  segment([0, 0], [3, 6], out);
  assert.ok(out.has("0,0") && out.has("3,6"));
  assert.equal(out.size, 7);
  const one = new Set();
  segment([2, 2], [2, 2], one);
  assert.deepEqual([...one], ["2,2"]);
});

test("the queue panel names the order's score and its own stop rule", () => {
  assert.equal(scoreOf({ order: "gain" }).key, "score");
  assert.equal(scoreOf({ order: "nu-naive" }).key, "nu_naive");
  const gain = { stop_remaining: 0.1, remaining_fraction: 0.25, stopped_early: false, done: false };
  assert.match(stopText(gain), /< 10 % of the expected wrong voxels \(now 25 %\)/);
  assert.match(stopText({ ...gain, stopped_early: true, remaining_fraction: 0.08 }), /^stopped: .* 8 %/);
  assert.match(stopText({ patience: 3, streak: 1, stopped_early: false, done: false }), /1 \/ 3 slices in a row/);
  const dice = { stop_dice: 0.0225, remaining_dice: 0.031, stopped_early: false, done: false, front: [] };
  assert.match(stopText(dice), /< 2.25 Dice points of expected errors \(now 3.1\)$/);
  assert.match(stopText({ ...dice, front: [7, 9] }), /next: slice 7, beside a corrected slice$/);
  assert.match(stopText({ ...dice, stopped_early: true, remaining_dice: 0.012 }), /^stopped: .* 1.2 Dice points/);
});
