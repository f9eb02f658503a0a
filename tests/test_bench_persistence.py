"""`segrefine bench persistence` end to end at a small size (the real CLI in a subprocess)."""

import json

from conftest import run_cli


def test_bench_persistence_measures_both_paths(tmp_path):
    out = tmp_path / "persistence.json"
    run_cli("bench", "persistence", "--json", out, "--shape", "96x96x40", "--pen-ups", "3", check=True)
    data = json.loads(out.read_text(encoding="utf-8"))
    j, f = data["summary"]["journal"], data["summary"]["full_rewrite"]
    assert data["shape"] == [96, 96, 40] and len(data["pen_up_records"]) == 3
    # the full rewrite writes both whole volumes twice per pen-up (plus slices): at least 4 x 96*96*40
    assert f["bytes_median"] >= 4 * 96 * 96 * 40
    for rec in data["pen_up_records"]:  # a stroke wrote its journal record and nothing else
        if rec["scribble_journal_wchar"] is not None:
            assert rec["scribble_journal_wchar"] == rec["scribble_journal_bytes"]
    assert 0 < j["bytes_max"] < 64 * 1024 and data["ratio_full_over_journal"]["bytes_median"] > 50
    assert data["reopen_identical"] is True
    assert j["compaction"]["snapshot_bytes"] > 0 and data["machine"]["cores"] >= 1
    table = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "full rewrite (first format, no fsync; baseline)" in table and "journal of bbox patches" in table
    assert not list(tmp_path.glob("bench-persistence-*"))  # the sessions' folders are removed


def test_bench_persistence_refuses_a_bad_shape(tmp_path):
    proc = run_cli("bench", "persistence", "--json", tmp_path / "p.json", "--shape", "512x512")
    assert proc.returncode == 2 and "--shape must look like 512x512x300" in proc.stderr
    assert not (tmp_path / "p.json").exists()
