import numpy as np
import pytest

from segrefine.errors import InputError
from segrefine.guidance import SuggestionQueue, end_prior, rank_slices, slice_uncertainty, suggest


def _volume():
    y = np.zeros((30, 30, 6), np.uint8)
    u = np.zeros((30, 30, 6), np.float32)
    y[5:25, 5:25, 0] = 1  # big structure, uncertain rim
    u[5:25, 5, 0] = 0.2
    y[13:16, 13:16, 1] = 1  # small structure, fully uncertain: ν must rank it high
    u[13:16, 13:16, 1] = 0.2
    y[5:25, 5:25, 2] = 1  # big, certain
    u[:, :, 3] = 0.001  # empty slice with faint background noise
    u[10:18, 10:18, 4] = 0.15  # empty slice where the net hesitates: a missed structure
    return u, y


def test_nu_and_naive_definitions():
    u, y = _volume()
    s = slice_uncertainty(u, y, zeta=1.0, noise_floor=0)
    assert s["nu_naive"][0] == pytest.approx(20 * 0.2, rel=1e-5)
    assert s["nu"][0] == pytest.approx(20 * 0.2 / (400 + 1), rel=1e-5)
    assert s["nu"][1] == pytest.approx(9 * 0.2 / (9 + 1), rel=1e-5)
    assert rank_slices(s["nu"])[:3] == [4, 3, 1]  # ζ = 1, no floor: empty slices explode, noise too
    assert rank_slices(s["nu_naive"])[:3] == [4, 0, 1]


def test_small_structure_outranks_big_one_with_nu_not_with_naive():
    u, y = _volume()
    s = slice_uncertainty(u, y)
    assert s["nu"][1] > s["nu"][0]
    assert s["nu_naive"][1] < s["nu_naive"][0]


def test_empty_slices_noise_does_not_dominate_but_missed_structure_is_suggested():
    u, y = _volume()
    out = suggest(u, y, budget=0.5, order="nu")
    order = [s["index"] for s in out["slices"]]
    assert order.index(3) > order.index(0)  # noise ranks below a real uncertain slice
    assert out["slices"][order.index(3)]["nu"] == 0.0  # below the noise floor
    assert 4 in order[: out["budget_slices"]]  # the missed structure is within the budget
    assert out["budget_slices"] == 3 and out["axis"] == 2


def test_any_axis():
    u, y = _volume()
    out = suggest(np.moveaxis(u, 2, 0), np.moveaxis(y, 2, 0), axis=0, budget=1.0, order="nu")
    assert len(out["slices"]) == 6


def test_queue_budget_and_early_stop():
    q = SuggestionQueue(order=[5, 2, 7, 1, 0, 3], budget_slices=5, patience=3)
    assert q.next() == 5
    q.report(True)
    for k in (2, 7):
        assert q.next() == k
        q.report(False)
    assert q.next() == 1
    q.report(False)
    assert q.stopped_early and q.next() is None and q.shown == [5, 2, 7, 1]
    q2 = SuggestionQueue(order=[0, 1, 2], budget_slices=2)
    q2.next(), q2.report(True), q2.next(), q2.report(True)
    assert q2.done and q2.next() is None and not q2.stopped_early


def test_gain_order_ranks_expected_wrong_voxels():
    u, y = _volume()
    p = y.astype(np.float32)
    p[5:25, 5:7, 0] = 0.5  # 40 voxels the model is unsure of: 20 expected errors
    p[13:16, 13:16, 1] = 0.7  # 9 voxels at 0.3 each: 2.7 expected errors
    p[10:12, 10:18, 4] = 0.4  # 16 voxels at 0.4: 6.4
    out = suggest(u, y, prob=p, budget=1.0)
    assert out["order"] == "gain"
    assert [s["index"] for s in out["slices"]][:3] == [0, 4, 1]
    assert out["slices"][0]["expected_errors"] == pytest.approx(20.0)
    assert out["total_expected_errors"] == pytest.approx(20 + 2.7 + 6.4, rel=1e-5)
    assert out["expected_foreground"] == pytest.approx(float(p.sum()), rel=1e-6)
    # the end prior: the structure spans slices 0-2, so 0, 2 and 3 (beyond) get 0.75 x the
    # median expected errors of slices 0-2 (2.7)
    score = {s["index"]: s["score"] for s in out["slices"]}
    assert score[0] == pytest.approx(20 + 0.75 * 2.7, rel=1e-5)
    assert score[1] == pytest.approx(2.7, rel=1e-5) and score[4] == pytest.approx(6.4, rel=1e-5)
    assert score[2] == pytest.approx(0.75 * 2.7, rel=1e-5) == score[3]
    plain = suggest(u, y, prob=p, budget=1.0, end_weight=0.0)
    assert [s["score"] for s in plain["slices"]] == pytest.approx([s["expected_errors"] for s in plain["slices"]])
    with pytest.raises(InputError, match="needs the foreground probability"):
        suggest(u, y, order="gain")
    with pytest.raises(InputError, match="`order` must be one of"):
        suggest(u, y, prob=p, order="random")


def test_end_prior():
    expected = np.array([0.0, 1, 2, 3, 4, 0, 0])
    area = np.array([0, 5, 5, 5, 5, 0, 0])
    # slices 1-4 hold the structure: 0, 1, 4, 5 get 0.75 x median(1, 2, 3, 4) = 1.875
    assert end_prior(expected, area) == pytest.approx([1.875, 2.875, 2, 3, 5.875, 1.875, 0])
    assert end_prior(expected, area, 0.0) == pytest.approx(expected)
    assert end_prior(expected, np.zeros(7)) == pytest.approx(expected)  # nothing segmented: no ends
    assert end_prior(expected, np.array([5, 0, 0, 0, 0, 0, 5]), 1.0)[[0, 1, 5, 6]] == pytest.approx([0, 1, 0, 0])


def test_queue_follows_errors_and_stops_on_expected_remaining_dice():
    sug = {"order": "gain", "budget_slices": 5, "expected_foreground": 100.0,
           "slices": [{"index": k, "score": e, "expected_errors": e} for k, e in
                      [(3, 50.0), (1, 30.0), (4, 12.0), (0, 5.0), (2, 3.0)]]}
    q = SuggestionQueue.from_suggestions(sug)  # the gain order's own rules
    assert q.follow and q.patience is None and q.stop_dice == 0.0225 and q.stop_remaining is None
    shown = []
    while (k := q.next()) is not None:
        shown.append(k)
        q.report(False)
    # an error voxel is 1 / (2 x 100) of Dice: after 3, 1, 4 the slices left hold 8 voxels =
    # 4 % (not < 2.25 %): 0 is shown; then 3 voxels = 1.5 %: stop
    assert shown == [3, 1, 4, 0] and q.stopped_early
    assert q.state()["remaining_dice"] == pytest.approx(0.015)
    # following: 3 needed refinement, so its neighbours 2 and 4 come next, even 2, whose
    # expected errors are few; they count against the budget
    q = SuggestionQueue.from_suggestions({**sug, "budget_slices": 4})
    assert q.next() == 3
    q.report(True)
    assert q.state()["front"] == [2, 4]
    assert [q.next(), q.report(False), q.next(), q.report(True), q.next()] == [2, None, 4, None, 1]
    q.report(False)
    assert q.done and q.next() is None and not q.stopped_early  # the budget of 4 is used
    q = SuggestionQueue.from_suggestions(sug, follow=False)
    q.next(), q.report(True)
    assert q.next() == 1
    with pytest.raises(InputError, match="probability map"):
        SuggestionQueue.from_suggestions({**sug, "expected_foreground": None}, stop_dice=0.02)


def test_queue_stops_on_expected_remaining_gain():
    sug = {"order": "gain", "budget_slices": 5,
           "slices": [{"index": k, "expected_errors": e} for k, e in
                      [(3, 50.0), (1, 30.0), (4, 12.0), (0, 5.0), (2, 3.0)]]}
    # suggestions saved before the Dice stop (no expected_foreground): the earlier rule, stop
    # below 20 % of the expected wrong voxels left
    q = SuggestionQueue.from_suggestions(sug, follow=False)
    assert q.patience is None and q.stop_remaining == 0.2
    shown = []
    while (k := q.next()) is not None:
        shown.append(k)
        q.report(False)  # clean slices do not stop this rule
    # after 3 and 1, 20 of 100 expected errors remain (not < 20 %): 4 is shown; then 8 %
    assert shown == [3, 1, 4] and q.stopped_early
    assert q.state()["remaining_fraction"] == pytest.approx(0.08)
    q = SuggestionQueue.from_suggestions(sug, stop_remaining=0.3)
    while q.next() is not None:
        pass
    assert q.shown == [3, 1]  # 20 % left < 30 %
    q2 = SuggestionQueue.from_suggestions({**sug, "order": "nu"})  # the paper's rule
    assert q2.patience == 3 and q2.stop_remaining is None
    with pytest.raises(InputError, match="probability map"):
        SuggestionQueue.from_suggestions({**sug, "slices": [{"index": 0, "expected_errors": None}]},
                                         stop_remaining=0.1)


def test_bad_input():
    u, y = _volume()
    with pytest.raises(InputError, match="must have the same shape"):
        slice_uncertainty(u, y[:-1])
    with pytest.raises(InputError, match="budget"):
        suggest(u, y, budget=1.5)
    bad = u.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="must be finite"):
        slice_uncertainty(bad, y)
    with pytest.raises(InputError, match=r"`prob` must be a probability in \[0, 1\]"):
        slice_uncertainty(u, y, prob=u * 10)
    with pytest.raises(InputError, match=r"`prob` \(shape"):
        slice_uncertainty(u, y, prob=u[:-1])


def test_suggest_cli_with_external_maps(shared, tmp_path):
    import json

    from conftest import run_cli

    ref = shared / "fetal_stacks" / "reference_mgnet"
    img = shared / "fetal_stacks" / "images" / "a26_12.nii.gz"
    # official MG-Net outputs as an "external model": its seg as probability, its variance as U
    out = tmp_path / "s.json"
    run_cli("suggest", "-i", img, "--prob", ref / "a26_12_seg.nii.gz", "--uncertainty",
            ref / "a26_12_var.nii.gz", "--json", out, check=True)
    data = json.loads(out.read_text())
    assert data["axis"] == 2 and data["budget"] == 0.6 and len(data["slices"]) == 19
    # the official seg is binary: no expected errors, so the default order falls back to ν*
    assert data["order"] == "nu-naive" and "binary" in data["note"]
    scores = [s["nu_naive"] for s in data["slices"]]
    assert scores == sorted(scores, reverse=True)
    run_cli("suggest", "-i", img, "--prob", ref / "a26_12_seg.nii.gz", "--uncertainty",
            ref / "a26_12_var.nii.gz", "--json", out, "--order", "nu", check=True)
    data = json.loads(out.read_text())
    nus = [s["nu"] for s in data["slices"]]
    assert data["order"] == "nu" and nus == sorted(nus, reverse=True)
    assert {"index", "nu", "nu_naive"} <= set(data["slices"][0])
    bad = run_cli("suggest", "-i", img, "--prob", ref / "a26_12_seg.nii.gz", "--json", out)
    assert bad.returncode == 2 and "go together" in bad.stderr
