import json

import pytest

from segrefine.datasets import dataset_labels, load_dataset, load_splits, pair_folders, split_cases
from segrefine.errors import InputError


def test_hippocampus_layout_and_splits(hippo):
    cases = load_dataset(hippo)
    assert len(cases) == 220
    assert all(c.label is not None and c.label.name == c.image.name for c in cases)
    splits = load_splits(hippo / "splits.json")
    assert {len(splits[k]) for k in ("train", "val", "test")} == {160, 20, 40}
    test = split_cases(hippo, "test")
    assert [c.name for c in test] == splits["test"]
    assert set(splits["train_small"]) <= set(splits["train"])
    assert not set(splits["test"]) & set(splits["train"])
    assert dataset_labels(hippo) == {0: "background", 1: "anterior", 2: "posterior"}


def test_nnunet_channel_suffix_and_missing_label(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for name in ("a_0000.nii.gz", "a_0001.nii.gz"):
        (tmp_path / "imagesTr" / name).write_bytes(b"")
    (tmp_path / "labelsTr" / "a.nii.gz").write_bytes(b"")
    cases = load_dataset(tmp_path)
    assert [(c.name, c.image.name) for c in cases] == [("a", "a_0000.nii.gz")]
    (tmp_path / "imagesTr" / "b_0000.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="no label file named b"):
        pair_folders(tmp_path / "imagesTr", tmp_path / "labelsTr")


def test_bad_split(tmp_path, hippo):
    (tmp_path / "s.json").write_text(json.dumps({"train": ["nope"]}))
    with pytest.raises(InputError, match="not in the dataset"):
        split_cases(hippo, "train", tmp_path / "s.json")
    with pytest.raises(InputError, match="no split named 'test'"):
        split_cases(hippo, "test", tmp_path / "s.json")
