"""The benchmark commands end to end on a few real cases (the real CLI in a subprocess): every
file they promise is written, and the figures in the JSON hang together."""

import json

import numpy as np
import pytest
from conftest import run_cli


def _splits(hippo, tmp_path, n=1):
    """A split file with the first ``n`` cases of each split (benchmarks read cases by split)."""
    full = json.loads((hippo / "splits.json").read_text())
    path = tmp_path / "splits.json"
    path.write_text(json.dumps({k: v[:n] for k, v in full.items() if isinstance(v, list)}))
    return path


def _is_png(path):
    return path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_refine_runs_every_method_on_the_same_slices(hippo, tmp_path):
    out = tmp_path / "refine.json"
    run_cli("bench", "refine", "--images", hippo / "imagesTr", "--labels", hippo / "labelsTr",
            "--json", out, "--max-cases", 3, "--max-slices", 6,
            "--methods", "paint,idrlse,graphcut,rnet,idrlse@paper", check=True)
    data = json.loads(out.read_text())
    n = data["slices"]
    assert 1 <= n <= 6 and data["preset"] == "default"
    assert set(data["results"]) == {"paint", "idrlse", "graphcut", "rnet", "idrlse@paper"}
    painted = [r["dice_after"] for r in data["results"]["paint"]]
    for m, recs in data["results"].items():
        s = data["summary"][m]
        assert len(recs) == n
        assert all(0 <= r["dice_after"] <= 1 for r in recs)
        assert [r["dice_paint"] for r in recs] == pytest.approx(painted)  # painting beside every row
        assert s["dice_before"] == pytest.approx(np.mean([r["dice_before"] for r in recs]))
        diff = np.array([r["dice_after"] for r in recs]) - np.array(painted)
        assert s["gain_vs_paint"] == pytest.approx(100 * diff.mean())
        assert s["better_than_paint"] == int((diff > 1e-9).sum())
        assert s["worse_than_paint"] == int((diff < -1e-9).sum())
        assert s["better_than_paint"] + s["worse_than_paint"] + s["same_as_paint"] == n
    for style in ("few", "brush"):  # the same slices re-stroked; painting beside every method again
        block = data["stroke_styles"][style]
        assert 1 <= block["slices"] <= n and set(block["summary"]) == set(data["results"])
        assert block["summary"]["paint"]["gain_vs_paint"] == 0.0
    assert data["summary"]["paint"]["scribbles_respected_before_overwrite"] is None  # by construction
    assert data["summary"]["idrlse"]["scribbles_respected_before_overwrite"] is not None  # measured
    ft = data["fetal_timing"]  # real fetal slices, real strokes, same run
    assert ft["slices"] > 10 and ft["slice_shape"] == [192, 192] and ft["geodesic_speedup"] > 1
    assert ft["default"]["pixels_changed_beyond_painting_median"] > 0
    text = out.with_suffix(".md").read_text()
    assert "I-DRLSE (paper parameters)" in text and "Painting (strokes only)" in text
    assert _is_png(out.with_suffix(".png")) and _is_png(tmp_path / "refine_examples.png")


def test_bench_stack_runs_the_strategies_and_the_budget_sweep(hippo, tmp_path):
    out = tmp_path / "stack.json"
    run_cli("bench", "stack", "--images", hippo / "imagesTr", "--labels", hippo / "labelsTr",
            "--json", out, "--splits", _splits(hippo, tmp_path), "--strategies", "ugir,sequential",
            "--tune-split", "val", "--patience", "5", "--preset", "hippocampus", check=True)
    data = json.loads(out.read_text())
    assert set(data["results"]) == {"ugir", "sequential", "ugir-patience5"}
    seq, ugir = data["results"]["sequential"]["cases"][0], data["results"]["ugir"]["cases"][0]
    assert seq["slices_inspected"] == seq["slices"]  # sequential inspection sees every slice
    assert ugir["slices_inspected"] <= np.ceil(0.6 * ugir["slices"])
    assert data["results"]["ugir-patience5"]["patience"] == 5
    sweep = data["budget_sweep"]
    assert sweep["split"] == "val" and set(sweep["ugir"]) == {"0.2", "0.4", "0.6", "0.8", "1.0"}
    assert set(data["fetal"]) == {"a26_12", "b15_05"}
    gain = data["suggestion_gain"]
    assert set(gain) == {"0.1", "0.2", "0.3"}
    assert set(gain["0.3"]) == {"gain", "nu", "nu-naive", "best", "random"}
    for f in gain.values():  # nothing beats fixing the slices with the most error voxels
        assert all(v["gain"] <= f["best"]["gain"] + 1e-12 for v in f.values())
    stops = data["stop_sweep"]
    assert stops["split"] == "val" and len(stops["ugir"]) == 6 + 3  # the sweep and the ablations
    assert stops["ugir"]["stop below 2.25 Dice points left"]["rule"] == {"stop_dice": 0.0225}
    assert stops["ugir"]["stop below 2.25 Dice points left, no following"]["rule"]["follow"] is False
    text = out.with_suffix(".md").read_text()
    assert "UGIR ν, early stop after 5" in text and "Budget M'" in text and "best possible" in text
    assert _is_png(out.with_suffix(".png")) and _is_png(tmp_path / "fetal_a26_12_suggestions.png")


def test_bench_gcn_tunes_on_val_and_probes_memory(hippo, tmp_path):
    out = tmp_path / "gcn.json"
    run_cli("bench", "gcn", "--images", hippo / "imagesTr", "--labels", hippo / "labelsTr",
            "--json", out, "--splits", _splits(hippo, tmp_path), "--regimes", "full", "--passes", 2,
            "--sweep-cases", 1, "--memory-shape", "40x40x24", "--cache", tmp_path / "cache", check=True)
    data = json.loads(out.read_text())
    rec = data["results"]["full"][0]
    assert set(rec) >= {"cnn", "mc_mean", "crf", "gcn", "gcn_other", "gcn_crf", "seconds", "graph"}
    assert len(list((tmp_path / "cache" / "maps").glob("*/*.npz"))) == 2  # the val and the test case
    gcn = data["summary"]["full"]["variants"]["gcn"]
    assert gcn["gain_vs_mc_mean"] == pytest.approx(rec["gcn"]["dice"] - rec["mc_mean"]["dice"])
    tuning = data["tuning"]["full"]
    assert set(tuning["gcn_configs"]) >= {"ours, roi", "authors, reduced"}
    assert len(tuning["crf"]) == 48 and tuning["crf_best_dice"] == max(c["dice"] for c in tuning["crf"])
    assert set(tuning["margin"]) == {"0", "1", "3", "6", "10"}
    mem = data["memory"]
    assert mem["shape"] == [40, 40, 24] and mem["peak_mb"] >= mem["inputs_mb"] > 0 and mem["n_graphs"] == 1
    assert data["speed"]["build_speedup"] > 1
    assert "Tuning (full regime" in out.with_suffix(".md").read_text()
    assert _is_png(out.with_suffix(".png")) and _is_png(tmp_path / "gcn_tau.png")


def test_bench_gcn_refuses_a_bad_memory_shape(hippo, tmp_path):
    proc = run_cli("bench", "gcn", "--images", hippo / "imagesTr", "--labels", hippo / "labelsTr",
                   "--json", tmp_path / "gcn.json", "--memory-shape", "512x512")
    assert proc.returncode != 0 and "--memory-shape" in proc.stderr
    assert not (tmp_path / "gcn.json").exists()


def test_bench_uncertainty_same_runtime_and_never_tunes_on_reported_cases(hippo, tmp_path):
    """Every row runs on the same runtime and says so; with --split '' the reported cases
    exclude the val cases the UEO threshold is tuned on."""
    names = sorted(p.name.removesuffix(".nii.gz") for p in (hippo / "imagesTr").glob("*.nii.gz"))
    full = json.loads((hippo / "splits.json").read_text())
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"val": [names[0]], "test": full["test"][:1]}))
    out = tmp_path / "unc.json"
    run_cli("bench", "uncertainty", "--images", hippo / "imagesTr", "--labels", hippo / "labelsTr",
            "--json", out, "--splits", splits, "--split", "", "--max-cases", 1, "--passes", 2,
            "--methods", "unet,mcdropout,mgnet,mgnet_fp32", check=True)
    data = json.loads(out.read_text())
    assert set(data["summary"]) == {"unet", "mcdropout", "mgnet", "mgnet_fp32"}
    reported = {c["case"] for res in data["results"].values() for c in res["cases"]}
    assert names[0] not in reported and len(reported) == 1
    runtimes = {k: s["runtime"] for k, s in data["summary"].items()}
    assert runtimes["mcdropout"].endswith("2 passes") and runtimes["mgnet"].endswith("1 pass")
    assert len({r.split(",")[0] for r in runtimes.values()}) == 1  # one runtime for every row
    assert runtimes["mcdropout"] == "ONNX Runtime, fp32, 2 passes"
    assert runtimes["mgnet_fp32"] == "ONNX Runtime, fp32, 1 pass"
    assert runtimes["mgnet"] in ("ONNX Runtime, fp32, 1 pass", "ONNX Runtime, int8 (levels >= 1), 1 pass")
    assert data["ratios"]["mcdropout_over_mgnet_time"] > 0 and data["ratios"]["mcdropout_over_mgnet_fp32_time"] > 0
    assert "same runtime" in out.with_suffix(".md").read_text()
    bad = run_cli("bench", "uncertainty", "--images", hippo / "imagesTr", "--labels", hippo / "labelsTr",
                  "--json", tmp_path / "x.json", "--methods", "unet")
    assert bad.returncode != 0 and "--methods" in bad.stderr


def test_bench_graph_times_every_variant_against_the_earlier_default(hippo, tmp_path):
    """bench graph: one row per variant, the earlier default at 1.00x, the default row last;
    a hippocampus volume stands in for the fetal stack to keep it short."""
    out = tmp_path / "graph.json"
    stack = next((hippo / "imagesTr").glob("*.nii.gz"))
    run_cli("bench", "graph", "--json", out, "--fetal", stack, "--dataset", hippo, "--volumes", 1,
            "--repeats", 1, "--methods", "unet", check=True)
    rows = json.loads(out.read_text())["results"]["unet"]
    names = list(rows)
    assert names[0] == "training graph, 32 slices per run" and names[-1].startswith("the default")
    assert names[-2] == "training graph, 2^16 pixels per run, a one-thread session per torch thread, fp32"
    assert rows[names[0]]["fetal_speedup"] == 1.0 and len(names) == 9  # no int8 rows: the U-Net has no calibration
    assert all(r["fetal_median_s"] > 0 and r["hippocampus_median_s"] > 0 for r in rows.values())
    assert all(r["first_fetal_call_minor_faults"] >= 0 and r["first_over_warm"] > 0 for r in rows.values())
    assert out.with_suffix(".md").read_text().count("| unet |") == 9
    bad = run_cli("bench", "graph", "--json", out, "--methods", "resnet")
    assert bad.returncode != 0 and "--methods" in bad.stderr
