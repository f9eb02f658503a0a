import nibabel as nib
import numpy as np
from conftest import run_cli


def test_refine_gcn_cli_own_mc_dropout(hippo, tmp_path):
    img = hippo / "imagesTr" / "hippocampus_014.nii.gz"
    proc = run_cli("refine-gcn", "-i", img, "-o", tmp_path, "--passes", "3", check=True)
    assert "nodes" in proc.stderr
    ref = nib.load(str(img))
    for name, dtype in (("hippocampus_014.nii.gz", np.uint8), ("hippocampus_014_entropy.nii.gz", np.float32)):
        out = nib.load(str(tmp_path / name))
        assert np.array_equal(out.affine, ref.affine) and out.shape == ref.shape
        assert out.get_data_dtype() == dtype
    ent = np.asarray(nib.load(str(tmp_path / "hippocampus_014_entropy.nii.gz")).dataobj)
    assert 0 <= ent.min() and ent.max() <= 1
    labels = np.asarray(nib.load(str(tmp_path / "hippocampus_014.nii.gz")).dataobj)
    assert set(np.unique(labels)) <= {0, 1} and labels.any()


def test_refine_gcn_cli_external_maps_and_bad_input(shared, tmp_path):
    img = shared / "fetal_stacks" / "images" / "a26_12.nii.gz"
    ref = nib.load(str(img))
    seg = np.asarray(nib.load(str(shared / "fetal_stacks" / "reference_mgnet" / "a26_12_seg.nii.gz")).dataobj)
    prob = np.where(seg > 0, 0.9, 0.1).astype(np.float32)
    prob[80:100, 80:100, 9] = 0.5  # an uncertain patch
    p = tmp_path / "p.nii.gz"
    nib.save(nib.Nifti1Image(prob, ref.affine), str(p))
    run_cli("refine-gcn", "-i", img, "-o", tmp_path / "out", "--prob", p, check=True)
    assert (tmp_path / "out" / "a26_12.nii.gz").exists()
    bad = run_cli("refine-gcn", "-i", img, "-o", tmp_path / "o2", "--prob", p, "--tau", "1.5")
    assert bad.returncode == 2 and "--tau must be in (0, 1]" in bad.stderr
    s = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10, 3), np.float32), ref.affine), str(s))
    bad = run_cli("refine-gcn", "-i", img, "-o", tmp_path / "o3", "--samples-file", s)
    assert bad.returncode == 2 and "differs from the image's" in bad.stderr
    assert not (tmp_path / "o2" / "a26_12.nii.gz").exists() and not (tmp_path / "o3" / "a26_12.nii.gz").exists()
    bad = run_cli("refine-gcn", "-i", img, "-o", tmp_path / "o4", "--prob", p, "--nodes", "all")
    assert bad.returncode == 2 and "--nodes must be one of roi, reduced, band" in bad.stderr
    bad = run_cli("refine-gcn", "-i", img, "-o", tmp_path / "o5", "--prob", p, "--graph", "theirs")
    assert bad.returncode == 2 and "--graph must be one of ours, authors" in bad.stderr


def test_refine_gcn_cli_then_dense_crf(hippo, tmp_path):
    """--crf: the dense CRF runs on the GCN's probability (relabelled voxels) and E (elsewhere)."""
    from segrefine import io
    from segrefine.refine.crf import dense_crf
    from segrefine.refine.gcn import refine_gcn

    img = hippo / "imagesTr" / "hippocampus_014.nii.gz"
    vol = io.load(img)
    ref = nib.load(str(img))
    seg = np.asarray(nib.load(str(hippo / "labelsTr" / "hippocampus_014.nii.gz")).dataobj) > 0
    prob = np.where(seg, 0.9, 0.1).astype(np.float32)
    i, j, k = (s // 2 for s in seg.shape)
    prob[i - 4:i + 4, j - 4:j + 4, :] = np.where(seg[i - 4:i + 4, j - 4:j + 4, :], 0.45, 0.55)  # a wrong, unsure patch
    p = tmp_path / "p.nii.gz"
    nib.save(nib.Nifti1Image(prob, ref.affine), str(p))
    run_cli("refine-gcn", "-i", img, "-o", tmp_path / "gcn", "--prob", p, check=True)
    proc = run_cli("refine-gcn", "-i", img, "-o", tmp_path / "crf", "--prob", p, "--crf", check=True)
    assert "by the CRF" in proc.stdout + proc.stderr
    gcn = np.asarray(nib.load(str(tmp_path / "gcn" / "hippocampus_014.nii.gz")).dataobj)
    out = np.asarray(nib.load(str(tmp_path / "crf" / "hippocampus_014.nii.gz")).dataobj)
    _, info = refine_gcn(vol.array, prob=np.asarray(io.load(p).array, np.float32), spacing=vol.spacing,
                         return_prob=True)
    np.testing.assert_array_equal(out, dense_crf(vol.array, info["prob"], spacing=vol.spacing))
    assert (out != gcn).any()


def test_refine_gcn_cli_caps_the_graph(shared, tmp_path):
    """--max-nodes below the ROI size: the band node set, cut into slabs, and a warning."""
    img = shared / "fetal_stacks" / "images" / "a26_12.nii.gz"
    ref = nib.load(str(img))
    seg = np.asarray(nib.load(str(shared / "fetal_stacks" / "reference_mgnet" / "a26_12_seg.nii.gz")).dataobj)
    prob = np.where(seg > 0, 0.9, 0.1).astype(np.float32)
    prob[70:110, 70:110, 8:11] = 0.5
    p = tmp_path / "p.nii.gz"
    nib.save(nib.Nifti1Image(prob, ref.affine), str(p))
    proc = run_cli("refine-gcn", "-i", img, "-o", tmp_path / "out", "--prob", p, "--max-nodes", "20000",
                   check=True)
    assert "max_nodes = 20000" in proc.stdout + proc.stderr
    out = np.asarray(nib.load(str(tmp_path / "out" / "a26_12.nii.gz")).dataobj)
    assert out.shape == seg.shape and set(np.unique(out)) <= {0, 1}
    outside = np.ones(seg.shape, bool)
    outside[70:110, 70:110, 8:11] = False
    assert (out[outside] == (seg[outside] > 0)).all()  # confident voxels keep the prediction


def test_refine_gcn_cli_defaults_are_the_library_defaults():
    """The CLI spells its defaults out (importing the GCN module would load torch at start-up);
    they must stay those of refine_gcn."""
    import inspect

    from segrefine.cli import refine_gcn_cmd
    from segrefine.refine.gcn import refine_gcn

    cli = inspect.signature(refine_gcn_cmd).parameters
    lib = inspect.signature(refine_gcn).parameters
    for name in ("margin", "nodes", "max_nodes", "tau", "graph", "relabel"):
        assert cli[name].default.default == lib[name].default, name
