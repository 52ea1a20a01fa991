"""Quality of the performer on BabyBand test tracks (leader = the Guitar stem); see
:mod:`ensemble.jobs.perform_eval` for the definitions.

Reports, pooled over the test split: the bass pitch class agreement with the ground-truth Bass stem
(planned f0 and pYIN of the rendered bass) against two baselines measured in the same run (a
constant bass on the estimated key's tonic; chance = shuffled frames), the key accuracy, the drum
onsets' distance to the leader's beat grid (estimated and true) against a half-beat-shifted
baseline, and the largest mix peak. Prints a per-track table and a final JSON line.

    python -m benchmarks.perform_quality [--data data/babyband] [--split test] [--no-rendered-pitch]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ensemble.jobs.perform_eval import EvalConfig, evaluate_tracks, load_performer
from ensemble.perform import PerformConfig


def _fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/babyband")
    parser.add_argument("--split", default="test")
    parser.add_argument("--checkpoints", default="checkpoints")
    parser.add_argument("--drum-db", default="assets/drums")
    parser.add_argument("--harmony", default="auto", choices=("auto", "rules", "learned"))
    parser.add_argument("--no-rendered-pitch", action="store_true", help="skip pYIN of the bass stem")
    parser.add_argument("--allow-untrained", action="store_true",
                        help="stand in untrained models for missing checkpoints (dry runs)")
    parser.add_argument("--max-tracks", type=int)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json-out", help="also write the full result (per-track rows) here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = PerformConfig(checkpoints_dir=args.checkpoints, drum_db=args.drum_db,
                           harmony_model=args.harmony)
    performer, untrained = load_performer(config, allow_untrained=args.allow_untrained)
    t0 = time.perf_counter()
    res = evaluate_tracks(performer, args.data,
                          config=EvalConfig(split=args.split, rendered_pitch=not args.no_rendered_pitch,
                                            max_tracks=args.max_tracks))
    wall = time.perf_counter() - t0
    cols = ("track", "collection", "key_est", "key_true", "tempo_est", "tempo_true", "bass_pc_plan",
            "bass_pc_rendered", "bass_pc_tonic", "bass_pc_chance", "drum_err_ms_est",
            "drum_err_ms_gt", "beat_err_ms", "mix_peak_dbfs")
    rows = [[str(r.get(c, "-")) if not isinstance(r.get(c), float) else f"{r[c]:.3g}" for c in cols]
            for r in res["tracks"]]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    s = res["summary"]
    print()
    print(f"{s['tracks']} {args.split} tracks, {s['bass_frames_both_sound']} frames where both basses "
          f"sound; harmony model {performer.harmony.name}; models: "
          f"{'trained' if not untrained else 'untrained stand-ins for ' + ', '.join(untrained)}")
    print(f"{'bass pitch class = truth':<44}{'share of frames':>16}")
    for label, key in (("performer, planned f0", "bass_pc_plan"),
                       ("performer, rendered bass (pYIN)", "bass_pc_rendered"),
                       ("baseline: constant tonic of estimated key", "bass_pc_tonic_baseline"),
                       ("baseline: chance (shuffled frames)", "bass_pc_chance_baseline")):
        print(f"{label:<44}{_fmt(s[key]):>16}")
    print(f"rendered bass: pYIN finds a pitch on {_fmt(s['rendered_bass_pitched_share'])} of the planned "
          f"note frames ({s['bass_frames_both_sound_rendered']} frames compared)")
    print(f"key accuracy {_fmt(s['key_accuracy'])}; beat tracking median |error| "
          f"{_fmt(s['beat_err_ms_median_est_vs_true'], '.1f')} ms")
    print(f"{'drum onsets: median |distance| to grid':<44}{'ms':>16}")
    for label, key in (("performer's grid (beats + subdivisions)", "drum_onset_err_ms_median_vs_est_grid"),
                       ("true grid (beats + subdivisions)", "drum_onset_err_ms_median_vs_true_grid"),
                       ("baseline: drums half a subdivision late",
                        "drum_onset_err_ms_median_shifted_baseline"),
                       ("(performer's beats only, no subdivisions)",
                        "drum_onset_err_ms_median_vs_est_beats_only")):
        print(f"{label:<44}{_fmt(s[key], '.1f'):>16}")
    print(f"leader beats with a drum onset within 40 ms: {_fmt(s['beats_with_drum_onset_within_40ms'])}; "
          f"max mix peak {_fmt(s['mix_peak_dbfs_max'], '.2f')} dBFS")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({"benchmark": "perform_quality", **s, "harmony_model": performer.harmony.name,
                      "untrained_stand_ins": untrained, "wall_s": round(wall, 1)}))


if __name__ == "__main__":
    main()
