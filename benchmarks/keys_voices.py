"""Benchmark: which Keys decoder plays the performer's Keys best? (issue 14, item 4)

The performer plays Keys as up to three monophonic voices, each rendered by the Keys decoder and
summed (:mod:`ensemble.perform.performer`). So a Keys decoder is judged here the way it is used:
on the test split of a Keys-voices corpus (``python -m ensemble corpus keys-voices``), every voice
of a source track is rendered from its own controls (ground-truth f0 from its notes, loudness from
its own rendering), the voices are summed, and the sum is compared with the source track's real
Keys stem (the chords as the SoundFont played them) by the training loss's multi-resolution STFT
distance, on the first two sounding 4 s windows of each track.

Rows, in one run:

* each ``--decoder NAME=PATH`` (e.g. the chord-trained and the voice-trained decoder);
* ``additive``: the fixed-spectrum additive baseline (1/k harmonics, no noise) per voice;
* ``soundfont voices``: the voices' own SoundFont renderings summed -- the ceiling of the
  voice representation (what is lost by splitting chords into voices, not by a decoder).

Also per decoder: the single-voice MR-STFT (each voice alone against its own rendering).

    python -m benchmarks.keys_voices --voices data/keys_voices --source data/babyband_xl \\
        --decoder chords=checkpoints/decoder_Keys.pt --decoder voices=/tmp/kv/decoder_Keys.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 4.0
PER_TRACK = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voices", default="data/keys_voices", help="a `corpus keys-voices` folder")
    parser.add_argument("--source", default="data/babyband_xl", help="the BabyBand build it was made from")
    parser.add_argument("--decoder", action="append", default=[], metavar="NAME=PATH",
                        help="a Keys decoder checkpoint to compare (repeatable)")
    parser.add_argument("--split", default="test", choices=("test", "valid"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", help="also write the result JSON here")
    args = parser.parse_args()

    import torch

    from ensemble.audio import load_audio
    from ensemble.features import FeatureConfig
    from ensemble.files import sha256_file, write_json_atomic
    from ensemble.jobs.training import ACTIVE_DB, additive_baseline
    from ensemble.models.io import load_decoder
    from ensemble.models.losses import multi_resolution_stft_loss

    decoders = {}
    for spec in args.decoder:
        name, sep, path = spec.partition("=")
        if not sep or not name or not Path(path).is_file():
            parser.error(f"--decoder {spec!r}; allowed: NAME=PATH of an existing checkpoint")
        model, meta = load_decoder(path)
        if model.config.instrument != "Keys":
            parser.error(f"--decoder {spec!r} is a {model.config.instrument!r} decoder; allowed: Keys")
        decoders[name] = (model.eval(), meta)
    if not decoders:
        parser.error("give at least one --decoder NAME=PATH")
    fc = FeatureConfig()
    hop, frames = fc.hop_length, int(round(SECONDS * fc.frame_rate))
    t_run = time.perf_counter()

    groups: dict[str, list[Path]] = defaultdict(list)
    for d in sorted(Path(args.voices).iterdir()):
        meta_path = d / "metadata.json"
        if meta_path.is_file():
            m = json.loads(meta_path.read_text())
            if m.get("split") == args.split:
                groups[m["source_track"]].append(d)
    if not groups:
        raise SystemExit(f"{args.voices}: no {args.split} voices")

    names = [*decoders, "additive", "soundfont voices"]
    chord_scores = {k: [] for k in names}
    single_scores = {k: [] for k in [*decoders, "additive"]}
    windows = 0
    gen = torch.Generator().manual_seed(args.seed)
    for source, voice_dirs in sorted(groups.items()):
        stem = load_audio(Path(args.source) / source / "stems" / "Keys.flac", max_seconds=3600).audio
        voices = []
        for d in voice_dirs:
            with np.load(d / "features.npz") as z:
                voices.append((z["Keys/f0_hz"].astype(np.float32), z["Keys/loudness_db"].astype(np.float32),
                               load_audio(d / "stems" / "Keys.flac", max_seconds=3600).audio))
        n = min(len(stem) // hop, *(len(v[0]) for v in voices))
        with np.load(Path(args.source) / source / "features.npz") as z:
            stem_loud = z["Keys/loudness_db"][:n]
        taken = 0
        for start in range(0, n - frames, frames):
            if (stem_loud[start:start + frames] > ACTIVE_DB).mean() < 0.5:
                continue
            a, b = start * hop, (start + frames) * hop
            target = torch.tensor(stem[a:b])[None]
            f0 = torch.tensor(np.stack([v[0][start:start + frames] for v in voices]))[..., None]
            loud = torch.tensor(np.stack([v[1][start:start + frames] for v in voices]))[..., None]
            own = torch.tensor(np.stack([np.pad(v[2][a:b], (0, max(0, b - a - len(v[2][a:b])))) for v in voices]))
            with torch.inference_mode():
                outs = {k: m(f0, loud, generator=gen) for k, (m, _) in decoders.items()}
                outs["additive"] = additive_baseline(f0, loud, features=fc)
            for k, y in outs.items():
                chord_scores[k].append(float(multi_resolution_stft_loss(y.sum(0, keepdim=True), target)))
                sounding = [i for i in range(len(voices)) if (loud[i, :, 0] > ACTIVE_DB).float().mean() >= 0.5]
                single_scores[k].extend(float(multi_resolution_stft_loss(y[i:i + 1], own[i:i + 1]))
                                        for i in sounding)
            chord_scores["soundfont voices"].append(float(multi_resolution_stft_loss(own.sum(0, keepdim=True),
                                                                                    target)))
            windows += 1
            taken += 1
            if taken == PER_TRACK:
                break

    def mean(xs):
        return round(float(np.mean(xs)), 4) if xs else None

    result = {
        "benchmark": "keys_voices", "split": args.split, "tracks": len(groups), "windows": windows,
        "window_seconds": SECONDS, "seed": args.seed,
        "command": "python -m benchmarks.keys_voices " + " ".join(sys.argv[1:]),
        "decoders": {k: {"checkpoint": spec.partition("=")[2], "sha256": sha256_file(spec.partition("=")[2]),
                         "train_steps": decoders[k][1].get("steps"),
                         "data_dir": decoders[k][1].get("data_dir"), "complete": decoders[k][1].get("complete")}
                     for k, spec in zip(decoders, args.decoder, strict=True)},
        "mrstft_voices_summed_vs_real_chords": {k: mean(v) for k, v in chord_scores.items()},
        "mrstft_single_voice": {k: mean(v) for k, v in single_scores.items()},
        "wall_s": round(time.perf_counter() - t_run, 1),
    }
    print(f"Keys in the performer's use: {len(groups)} {args.split} tracks, {windows} windows of {SECONDS:g} s")
    print(f"{'renderer':<20} {'voices summed vs real chords':>30} {'single voice':>14}")
    for k in names:
        single = result["mrstft_single_voice"].get(k)
        print(f"{k:<20} {result['mrstft_voices_summed_vs_real_chords'][k]:>30} "
              f"{'-' if single is None else single:>14}")
    line = json.dumps(result)
    if args.json_out:
        write_json_atomic(args.json_out, result)
    print(line)


if __name__ == "__main__":
    main()
