import json

import numpy as np
import pytest
from conftest import run_cli

from segrefine.errors import InputError
from segrefine.simulate import TimeModel, UserModel, needs_refinement, run_case


def _case():
    from segrefine.phantom import make_phantom

    image, label = make_phantom(shape=(40, 48, 10), seed=2)
    return image, label > 0


def test_perfect_prediction_costs_only_inspection():
    image, gt = _case()
    prob = gt.astype(np.float32)
    unc = np.zeros(gt.shape, np.float32)
    t = TimeModel()
    rec = run_case(image, gt, "sequential", prob=prob, uncertainty=unc, label=gt)
    assert rec["scribbles"] == 0 and rec["dice_after"] == 1.0
    assert rec["slices_inspected"] == 10
    assert rec["user_seconds"] == pytest.approx(10 * (t.inspect_s + t.scroll_s + t.accept_s))
    ugir = run_case(image, gt, "ugir-nu", prob=prob, uncertainty=unc + 1e-3, label=gt)
    assert ugir["stopped_early"] and ugir["slices_inspected"] == 3  # three slices needing nothing
    # the default order on a certain prediction: no expected errors, nothing to inspect
    soft = np.where(gt, 0.999, 0.0).astype(np.float32)
    ugir = run_case(image, gt, "ugir", prob=soft, uncertainty=unc + 1e-3, label=gt)
    assert ugir["slices_inspected"] <= 2 and ugir["user_seconds"] <= 2 * (t.inspect_s + t.accept_s)


def test_missing_slice_is_found_and_fixed_by_ugir():
    image, gt = _case()
    label = gt.copy()
    label[:, :, 5] = False  # the CNN missed slice 5
    prob = np.where(label, 0.999, 0.0001).astype(np.float32)  # confident elsewhere
    prob[:, :, 5][gt[:, :, 5]] = 0.4
    unc = np.full(gt.shape, 1e-4, np.float32)
    unc[:, :, 5][gt[:, :, 5]] = 0.2
    for strategy in ("ugir", "ugir-nu"):  # the default order and stop, and the paper's
        rec = run_case(image, gt, strategy, prob=prob, uncertainty=unc, label=label, user=UserModel(seed=1))
        assert rec["slices_inspected"] <= 4, strategy  # slice 5 first, then the stop
        assert rec["scribbles"] >= 1 and rec["dice_after"] > rec["dice_before"]
    assert not needs_refinement(gt[:, :, 5], gt[:, :, 5], UserModel())


def test_bad_strategy():
    image, gt = _case()
    with pytest.raises(InputError, match="--strategy must be one of"):
        run_case(image, gt, "magic")
    with pytest.raises(InputError, match="needs the CNN"):
        run_case(image, gt, "ugir")


def test_simulate_cli_on_real_cases(hippo, tmp_path):
    out = tmp_path / "ugir.json"
    run_cli("simulate", "--images", hippo / "imagesTr", "--labels", hippo / "labelsTr", "--split", "test",
            "--strategy", "ugir", "--json", out, "-o", tmp_path / "masks", "--max-cases", "1",
            "--preset", "hippocampus", check=True)
    data = json.loads(out.read_text())
    assert data["strategy"] == "ugir" and len(data["cases"]) == 1
    keys = {"case", "dice_before", "dice_after", "slices_inspected", "scribbles", "user_seconds", "machine_seconds"}
    assert keys <= set(data["cases"][0]) and keys - {"case"} <= set(data["mean"])
    assert (tmp_path / "masks" / f"{data['cases'][0]['case']}.nii.gz").exists()


def test_order_baselines_oracle_and_random():
    from segrefine.simulate import _baseline_order

    gt = np.zeros((8, 8, 4), bool)
    gt[2:6, 2:6, :] = True
    mask = gt.copy()
    mask[2:4, 2:6, 1] = False  # 8 error voxels in slice 1
    mask[2, 2, 3] = False  # 1 in slice 3
    sug = {"order": "gain", "budget_slices": 2,
           "slices": [{"index": k, "expected_errors": 1.0, "in_budget": k < 2} for k in range(4)]}
    oracle = _baseline_order(sug, "ugir-oracle", mask, gt, 2, seed=0)
    assert [s["index"] for s in oracle["slices"]][:2] == [1, 3]
    assert [s["expected_errors"] for s in oracle["slices"]][:2] == [8.0, 1.0]
    assert [s["in_budget"] for s in oracle["slices"]] == [True, True, False, False]
    rand = _baseline_order(sug, "ugir-random", mask, gt, 2, seed=0)
    assert sorted(s["index"] for s in rand["slices"]) == [0, 1, 2, 3]
    assert rand == _baseline_order(sug, "ugir-random", mask, gt, 2, seed=0)  # seeded


def test_ugir_paint_walks_like_ugir_and_only_paints():
    """The painting baseline of the stack study: UGIR's slices, strokes painted, nothing else."""
    image, gt = _case()
    label = gt.copy()
    label[:, :, 5] = False
    prob = np.where(label, 0.999, 0.0001).astype(np.float32)
    prob[:, :, 5][gt[:, :, 5]] = 0.4
    unc = np.full(gt.shape, 1e-4, np.float32)
    kw = dict(prob=prob, uncertainty=unc, label=label, user=UserModel(seed=1))
    ugir, paint = run_case(image, gt, "ugir", **kw), run_case(image, gt, "ugir-paint", **kw)
    assert paint["slices_inspected"] == ugir["slices_inspected"]
    assert paint["scribbles"] >= 1 and paint["dice_after"] > paint["dice_before"]
    assert max(paint["refine_ms"]) < 50  # painting is a copy, no evolution
