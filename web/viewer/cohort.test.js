// node --test: the cohort panel's status words (cohort.js; its DOM parts run in the browser tests)
import { test } from "node:test";
import assert from "node:assert/strict";
import { caseStatus } from "./cohort.js";

test("a failed case says failed with its error", () => {
  const s = caseStatus({ case: "broken", error: "broken.nii.gz: not a NIfTI file" }, null);
  assert.equal(s.text, "failed");
  assert.match(s.title, /broken\.nii\.gz: not a NIfTI file/);
});

test("a case without a session is to review; with one, its accepted slices and whether it is open", () => {
  assert.equal(caseStatus({ case: "a", session: null, accepted: null }, null).text, "to review");
  assert.equal(caseStatus({ case: "a", session: "s1", accepted: 2 }, "s2").text, "2 accepted");
  assert.equal(caseStatus({ case: "a", session: "s1", accepted: 0 }, "s1").text, "0 accepted (open)");
});
