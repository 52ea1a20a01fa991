"""Write an :class:`~ensemble.extend.Extension` to disk: every candidate's performance and the result
tables, ``DIR/rankNN/{mix.wav, stems/*.wav, perform.json}``, ``DIR/results.json`` and
``DIR/results.csv``, into a temporary folder renamed into place, so a failed request leaves nothing
behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

from ensemble.audio import save_wav
from ensemble.errors import EnsembleError
from ensemble.extend import Extension
from ensemble.perform import write_performance

__all__ = ["write_extension", "RESULT_COLUMNS"]
RESULT_COLUMNS = ["rank", "db_chunk_idx", "track", "start_seconds", "composite", "relevance",
                  "coherence", "lookback", "transpose", "seam_pitch_jump_cents",
                  "seam_loudness_jump_db", "fallback"]


def _results_csv(ext: Extension) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(RESULT_COLUMNS)
    for c in ext.candidates:
        d = c.to_dict()
        w.writerow([d["rank"], d["chunk"], d["track"], d["start_seconds"], d["composite"], d["relevance"],
                    d["coherence"], d["lookback"], d["transpose"], d["seam_pitch_jump_cents"],
                    d["seam_loudness_jump_db"], d["fallback"]])
    return buf.getvalue()


def write_extension(ext: Extension, out_dir: str | os.PathLike) -> Path:
    """Write every candidate and the result tables; all or nothing.

    Raises:
        EnsembleError: ``out_dir`` exists and is not empty.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise EnsembleError(f"output folder {str(out)!r} exists and is not empty; choose a new one")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for c, perf in zip(ext.candidates, ext.performances, strict=True):
            write_performance(perf, tmp / f"rank{c.rank:02d}")
        save_wav(tmp / "input.wav", ext.input_audio, ext.sample_rate)
        (tmp / "results.json").write_text(json.dumps(ext.results(), indent=2) + "\n")
        (tmp / "results.csv").write_text(_results_csv(ext))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
