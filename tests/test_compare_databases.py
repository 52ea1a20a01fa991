"""scripts/compare_databases.py: equal folders pass, one changed value or a missing file is named."""

from __future__ import annotations

import json

import numpy as np

from scripts.compare_databases import main


def _db(folder, seg, tempo=120.0):
    folder.mkdir()
    np.savez(folder / "chunks.npz", seg=seg, track=np.array([0, 0, 1], np.int32))
    np.savez(folder / "tracks.npz", tempo_bpm=np.array([tempo, np.nan], np.float32))
    (folder / "manifest.json").write_text(json.dumps({"n_chunks": 3, "config": {"chunk_seconds": 2.0}}))
    return folder


def test_equal_databases_are_equal_nan_included(tmp_path, capsys):
    seg = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float16)
    a, b = _db(tmp_path / "a", seg), _db(tmp_path / "b", seg.copy())
    out = tmp_path / "r" / "cmp.json"
    assert main([str(a), str(b), "--json-out", str(out)]) == 0
    assert json.loads(out.read_text())["equal"] is True
    assert "EQUAL" in capsys.readouterr().out


def test_one_changed_value_is_found_and_named(tmp_path, capsys):
    seg = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float16)
    changed = seg.copy()
    changed[2, 3] = np.nextafter(changed[2, 3], np.float16(10))  # one float16 step
    a, b = _db(tmp_path / "a", seg), _db(tmp_path / "b", changed)
    assert main([str(a), str(b)]) == 1
    text = capsys.readouterr().out
    assert "chunks.npz:seg" in text and "DIFFERS" in text and "DIFFERENT" in text


def test_a_folder_without_arrays_is_refused(tmp_path, capsys):
    a = _db(tmp_path / "a", np.zeros((3, 4), np.float16))
    (tmp_path / "b").mkdir()
    assert main([str(a), str(tmp_path / "b")]) == 2
    assert "has no chunks.npz" in capsys.readouterr().err
