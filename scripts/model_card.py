"""Write checkpoints/MODEL_CARD.md and checkpoints/MANIFEST.json from the shipped checkpoints'
sidecars and the evaluation JSONs in checkpoints/eval/ (made by ``python -m ensemble eval ...``).

    python -m scripts.model_card [--checkpoints checkpoints]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ensemble.files import atomic_write_text, sha256_file

DECODERS = ("Guitar", "Bass", "Keys")
TIMBRE_DECODER = "Leader"  # conditioned on timbres (python -m ensemble corpus timbres)


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", default="checkpoints")
    args = parser.parse_args()
    ck = Path(args.checkpoints)
    corpus = _load(Path("data/babyband/corpus.json")) or {}
    corpus_xl = _load(Path("data/babyband_xl/corpus.json")) or {}

    lines = ["# Model card: ensemble instrument decoders and arranger", "",
             "All models are trained on CPU by this project's own commands from BabyBand, the corpus this",
             "project renders offline from music21's bundled scores (Bach chorales, Essen folksongs,",
             "Nottingham reels) through the TimGM6mb General-MIDI SoundFont.", "",
             "## Data", "",
             "```bash", "python -m ensemble corpus build --out data/babyband --seed 0",
             "python -m ensemble corpus build --out data/babyband_xl --seed 0 --minutes 240   # arranger",
             "```", ""]
    for label, c in (("data/babyband", corpus), ("data/babyband_xl", corpus_xl)):
        s = c.get("summary", {})
        if s:
            lines += [f"`{label}`: {s.get('tracks')} tracks, {s.get('minutes')} minutes; minutes per split: "
                      f"{s.get('minutes_per_split')}.", ""]
    lines += ["Splits are by source piece (a hash of seed and piece), and tracks come in one seeded order, so",
              "the 240-minute build is a superset of the 60-minute one: the same first 91 tracks, byte for",
              "byte, and the same split for each. The decoders train on `data/babyband`; the arranger, which",
              "learns from whole-band arrangements rather than timbre, on `data/babyband_xl` (it did not reach",
              "its target on 44 minutes of training audio). Its scores below are on both builds' test splits.",
              ""]
    lines += ["Frame grid: 16 kHz audio, hop 160 samples = **100 frames/s** (the reference design used 250);",
              "f0 and A-weighted loudness from the corpus's ground truth (f0 from the notes).", "",
              "## Models", "",
              "| model | parameters | file size | training steps | wall time | complete | command |",
              "|---|---|---|---|---|---|---|"]
    manifest = {"files": {}}
    for name in [f"decoder_{d}" for d in (*DECODERS, TIMBRE_DECODER)] + ["arranger"]:
        side = _load(ck / f"{name}.json")
        if side is None:
            continue
        meta = side["meta"]
        lines.append(f"| {name} | {side['n_parameters']:,} | {side['bytes'] / 1e6:.1f} MB | {meta['steps']} | "
                     f"{meta['wall_seconds'] / 60:.1f} min | {meta['complete']} | `{meta.get('command', '')}` |")
        manifest["files"][f"{name}.pt"] = {"sha256": sha256_file(ck / f"{name}.pt"), "command": meta.get("command"),
                                           "seed": meta["train_config"]["seed"],
                                           "data_manifest_sha256": meta.get("data_manifest_sha256"),
                                           "config": side["config"]}
    lines += ["", "Decoders: MLP -> 3-layer GRU (hidden 256) -> LayerNorm -> heads for amplitude, 100 harmonics",
              "and 65 noise bands, rendered by the project's DDSP synth; batch 16 x 2 s windows, Adam 1e-3 decaying",
              "to 1e-4, multi-resolution STFT loss (FFT 1024..64). Arranger: Transformer encoder (4 layers,",
              "d_model 128, 4 heads) over frames pooled by 4 (25 steps/s), 10 s windows, batch 16, Adam 5e-4",
              "decaying to 5e-5 over the planned steps, MSE on normalised follower loudness; inputs: the",
              "leader's loudness, onset strength, f0, voicing and its position in the tracked beat (sin/cos",
              "of 2*pi*k*phase, k = 1..4). Training stopped at the `--max-minutes` budgets (2-core CPU",
              "shared with other jobs); `complete = False` means fewer than the planned steps. Running the",
              "same command again resumes from `checkpoints/.train-<name>/` (not shipped). The Bass and Keys",
              "decoders were trained in one run each to their planned 900 steps into a scratch folder (the",
              "`--out` shown) and copied here; `--out checkpoints` trains the same files in place.",
              "The Bass decoder's loss has a 2048-point STFT besides 1024..64: with FFT sizes up to 1024",
              "(15.6 Hz bins) it had learned too little energy at the fundamental (pYIN on its output",
              "tracked the 3rd harmonic: median f0 error 1740 cents at 372 steps; 0.12 cents after).",
              "The **Keys** decoder learns single voices (`python -m ensemble corpus keys-voices --source",
              "data/babyband_xl --out data/keys_voices`: each Keys voice of a track rendered on its own),",
              "the way the performer plays Keys (up to three monophonic voices, summed); the decoder before",
              "learned whole chord stems from the top note's f0. Its test score below is on single voices;",
              "in the performer's use -- every voice of a test track rendered and summed, against the",
              "track's real Keys stem -- see `benchmarks/results/keys_voices.json`",
              "(`python -m benchmarks.keys_voices`). The **Guitar** decoder stays at 430 steps: it embeds",
              "every query and every segment of the shipped RAG database (`assets/rag`, and the 1.17M",
              "scale database), so retraining it means rebuilding those databases and re-running their",
              "benchmarks; it renders only `--timbre guitar`.", "",
              "## Evaluation (test split)", "",
              "Decoders: multi-resolution STFT loss of resynthesis with ground-truth f0 and loudness in",
              "(lower is better), and median |f0 error| in cents of pYIN on the output vs the input f0.", "",
              "| instrument | windows | trained | untrained | additive 1/k baseline | f0 err trained (c) | "
              "f0 err baseline (c) | f0 err of pYIN on the real audio (c) |", "|---|---|---|---|---|---|---|---|"]
    for d in DECODERS:
        ev = _load(ck / "eval" / f"decoder_{d}.json")
        if ev:
            m, c = ev["mrstft"], ev["f0_error_cents_median"]
            lines.append(f"| {d} | {ev['windows']} | {m['trained']} | {m['untrained']} | {m['additive_baseline']} | "
                         f"{c.get('trained')} | {c.get('additive_baseline')} | {c.get('target')} |")
    ev = _load(ck / "eval" / f"decoder_{TIMBRE_DECODER}.json")
    if ev and ev.get("timbres"):
        timbres = _load(Path("data/timbres/manifest.json")) or {}
        lines += ["", f"**Timbre decoder** (`decoder_{TIMBRE_DECODER}.pt`): one decoder of the same architecture",
                  "with a learned 16-d vector per timbre appended to both MLPs' inputs, trained on the timbre-contrast",
                  "set (`python -m ensemble corpus timbres --source data/babyband_xl --out data/timbres`: the Guitar",
                  "melody of the first 40 train / 6 valid / 8 test tracks of the 240-minute build, 40 s each,",
                  "rendered by each program" + (f"; {len(timbres.get('tracks', []))} renderings)." if timbres
                                                else ")."),
                  "Test split, per timbre (the additive baseline gets the same f0 and loudness):", "",
                  "| timbre | windows | trained | untrained | additive 1/k baseline | better than the baseline by |",
                  "|---|---|---|---|---|---|"]
        for name, r in ev["timbres"].items():
            m = r["mrstft"]
            lines.append(f"| {name} | {r['windows']} | {m['trained']} | {m['untrained']} | {m['additive_baseline']} | "
                         f"{100 * (1 - m['trained'] / m['additive_baseline']):.1f} % |")
    lines += ["", "Commands: `python -m ensemble eval decoder --instrument NAME --figure "
              "checkpoints/figures/NAME.png --json-out checkpoints/eval/decoder_NAME.json`.", "",
              "Arranger: MSE of predicted follower loudness (normalised to [0, 1]: 0 = -80 dB, 1 = 0 dB) vs ground",
              "truth, against the leader's loudness scaled per follower (least squares on that build's train",
              "split) and the per-follower training mean.", ""]
    for name, label in (("arranger", "test split of `data/babyband` (the decoders' test split)"),
                        ("arranger_xl", "test split of `data/babyband_xl`")):
        ev = _load(ck / "eval" / f"{name}.json")
        if not ev:
            continue
        best = min(v for k, v in ev["mse"].items() if k != "arranger")
        lines += [f"On the {label}, {ev['test_tracks']} tracks: **{100 * (1 - ev['mse']['arranger'] / best):.1f}% "
                  "below the better baseline**.", "",
                  "| model | inputs | MSE all | Bass | Drums | Keys |", "|---|---|---|---|---|---|"]
        for k in ev["mse"]:
            row = f"baseline: {k}" if k != "arranger" else "arranger"
            pf = ev["mse_per_follower"][k]
            lines.append(f"| {row} | {','.join(ev['inputs']) if k == 'arranger' else '-'} | {ev['mse'][k]} | "
                         f"{pf.get('Bass')} | {pf.get('Drums')} | {pf.get('Keys')} |")
        lines.append("")
    ablation = _load(ck / "eval" / "arranger_ablation.json")
    if ablation:
        lines += ["Input ablation (" + ablation["protocol"] + "):", "",
                  "| inputs | steps | valid MSE | vs leader-scaled baseline |", "|---|---|---|---|"]
        for row in ablation["rows"]:
            lines.append(f"| {row['inputs']} | {row['steps']} | {row['mse']} | {row['ratio']} |")
        lines += ["", ablation["conclusion"], ""]
    lines += [
              "## Spectrograms (target vs resynthesis, first test window)", ""]
    for d in DECODERS:
        if (ck / "figures" / f"{d}.png").is_file():
            lines += [f"### {d}", "", f"![{d}](figures/{d}.png)", ""]
            manifest["files"][f"figures/{d}.png"] = {"sha256": sha256_file(ck / "figures" / f"{d}.png")}
    lines += ["## Limits", "",
              "- Timbres are General-MIDI SoundFont renderings, not recordings: the decoders imitate TimGM6mb.",
              "- CPU budgets: a few hundred steps per decoder, 3000 for the arranger; longer training lowers the",
              "  losses further.", ""]
    atomic_write_text(ck / "MODEL_CARD.md", "\n".join(lines))
    atomic_write_text(ck / "MANIFEST.json", json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {ck / 'MODEL_CARD.md'} and {ck / 'MANIFEST.json'}")


if __name__ == "__main__":
    main()
