"""Benchmark: does a continuation sound like the instrument the user played? (issue 14)

Every held-out query melody (:mod:`ensemble.jobs.heldout`: tunes the project never trains on) is
rendered by **every program of the timbre set**: the 9 programs the leader decoder learned
(:data:`ensemble.jobs.timbres.TRAINED`) and 6 it never saw (:data:`~ensemble.jobs.timbres.HELD_OUT`),
each placed in the program's range, 30 s at the query's level. The first 20 s is the upload; the
rest is the *true continuation* in that program. Each upload is extended to 30 s (K = ``--k``, the
Drums follower only: the leader is what is measured) by three systems, in one run:

* ``v2``: ``timbre="auto"`` -- the timbre inferred from the upload (:mod:`ensemble.timbre`);
* ``v2-no-key``: v2 with the continuity rule's key term off (``ContinuityConfig.key_cost = 0``):
  the previous version's rule, in the same run;
* ``v1-guitar``: ``timbre="guitar", match_colour=False, continuity=False`` -- BabyBand's guitar
  decoder as v1 rendered every continuation, the composite's Top-K as they are;
* ``guitar``: ``timbre="guitar"`` with everything else of v2 (colour match, continuity): what the
  timbre decoder adds;
* ``random``: a timbre drawn at random (seeded) from the trained ones, everything else of v2;
* ``oracle`` (``--systems oracle``, a diagnosis rather than a system): v2's timbre choice and colour
  match, but the continuation plays the **true** continuation's own controls (f0, voicing, loudness
  analysed from the program's rendering) instead of a retrieved one. Its position is what the
  rendering alone reaches when the notes are right: the gap between it and ``v2`` is the retrieved
  content's, the gap between it and 0 the decoder's.

**Timbre position** of a continuation: ``d`` = distance between the mean MFCCs (1-19; frames within
40 dB of the loudest) of the upload's last 3 s and of the continuation's first 3 s (the leader, after
the crossfade); ``d_self`` = the same distance for the true continuation in the same program;
``d_other`` = the median of it for the true continuation rendered by the other programs;
``position = (d - d_self) / (d_other - d_self)``: 0 sounds like the same instrument going on, 1 like
another instrument. The check that the measure separates its anchors comes first: the share of
(query, program) pairs with ``d_self < d_other``, and the positions of the true continuations in
the other programs (near 1) against the same program's (0 by construction), as an AUC of the other
programs' raw ``d`` against ``d_self``.

Also per candidate: the spectral-centroid ratio across the seam (continuation / upload, same
windows), and for ``v2`` the chosen timbre, whether it is the program's own (trained programs) and the
re-synthesis MR-STFT of the upload in it. Prints tables per system and program group (trained /
held-out) and a final JSON line (also written to ``--json-out``).

    python -m benchmarks.timbre [--queries q00,q02,...] [--every 2] [--k 3] [--programs 40,73,...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import librosa
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
WINDOW_S = 3.0
SYSTEMS = ("v2", "v2-no-key", "v1-guitar", "guitar", "random")
DIAGNOSES = ("oracle",)


def mfcc_mean(x: np.ndarray) -> np.ndarray | None:
    """Mean MFCC 1-19 over frames within 40 dB of the loudest (None: no such frame)."""
    hop, n_fft = 256, 1024
    m = librosa.feature.mfcc(y=x.astype(np.float32), sr=SR, n_mfcc=20, n_fft=n_fft, hop_length=hop)[1:20]
    rms = librosa.feature.rms(y=x, frame_length=n_fft, hop_length=hop)[0]
    db = 20 * np.log10(np.maximum(rms, 1e-10))
    keep = db >= db.max() - 40.0
    n = min(m.shape[1], len(keep))
    if not keep[:n].any() or db.max() < -90:
        return None
    return m[:, :n][:, keep[:n]].mean(axis=1)


def centroid_hz(x: np.ndarray) -> float | None:
    hop, n_fft = 256, 1024
    c = librosa.feature.spectral_centroid(y=x.astype(np.float32), sr=SR, n_fft=n_fft, hop_length=hop)[0]
    rms = librosa.feature.rms(y=x, frame_length=n_fft, hop_length=hop)[0]
    db = 20 * np.log10(np.maximum(rms, 1e-10))
    keep = db >= db.max() - 40.0
    n = min(len(c), len(keep))
    return float(np.mean(c[:n][keep[:n]])) if keep[:n].any() else None


def distance(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    return None if a is None or b is None else float(np.linalg.norm(a - b))


def position(d: float | None, d_self: float | None, d_other: float | None) -> float | None:
    if d is None or d_self is None or d_other is None or not d_other > d_self:
        return None
    return (d - d_self) / (d_other - d_self)


def render_in(query: dict, prog, total_s: float, soundfont: Path) -> np.ndarray:
    """The query's melody played by ``prog`` (placed in its range), ``total_s`` at 16 kHz, at the
    query's active level."""
    from ensemble.jobs.corpus.build import render_notes
    from ensemble.jobs.corpus.layout import NoteList
    from ensemble.jobs.heldout import active_level
    from ensemble.jobs.timbres import place_melody

    nj = query["notes"]
    sounding = np.asarray(nj["pitch"]) + int(query["sounding_shift_semitones"])
    shift = place_melody(sounding, prog)
    written = sounding + shift - prog.sounding_shift
    notes = NoteList(np.asarray(nj["onset_s"], float), np.asarray(nj["offset_s"], float), written.astype(np.int64),
                     np.asarray(nj["velocity"], np.int64))
    n = int(round(total_s * SR))
    y = render_notes(notes, program=prog.program, is_drum=False, n_samples=n, soundfont=soundfont, sample_rate=SR)
    level, _ = active_level(y[:, None].astype(np.float64), SR)
    y = y * 10 ** ((query["rms_dbfs"] - level) / 20)
    peak = float(np.abs(y).max())
    return (y * min(1.0, 0.891 / peak)).astype(np.float32)


def query_anchors(query: dict, programs, soundfont: Path):
    """The query rendered by every program and the timbre position's anchors.

    -> (renderings {program: audio}, upload's last-3-s MFCC means {program: [19]},
    {program: (d_self, [d to the other programs' true continuations])})."""
    n_in, w = int(round(query["input_seconds"] * SR)), int(WINDOW_S * SR)
    full = {p.program: render_in(query, p, query["total_seconds"], soundfont) for p in programs}
    tail = {k: mfcc_mean(v[n_in - w:n_in]) for k, v in full.items()}
    head = {k: mfcc_mean(v[n_in:n_in + w]) for k, v in full.items()}
    anchors = {}
    for p in programs:
        others = [distance(tail[p.program], head[o.program]) for o in programs if o.program != p.program]
        anchors[p.program] = (distance(tail[p.program], head[p.program]), [x for x in others if x is not None])
    return full, tail, anchors


def _median(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return round(float(statistics.median(xs)), 4) if xs else None


def _auc(low: list[float], high: list[float]) -> float | None:
    """P(a value of ``high`` > a value of ``low``): 1 = perfectly separated."""
    if not low or not high:
        return None
    lo, hi = np.asarray(low), np.asarray(high)
    return round(float((hi[None, :] > lo[:, None]).mean() + 0.5 * (hi[None, :] == lo[:, None]).mean()), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heldout", default=str(ROOT / "data" / "heldout"))
    parser.add_argument("--queries", default="", help="comma-separated query ids (default: every --every-th)")
    parser.add_argument("--every", type=int, default=2, help="take every N-th query (default 2: 12 of 24)")
    parser.add_argument("--programs", default="", help="comma-separated GM programs (default: the whole set)")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated subset of {SYSTEMS + DIAGNOSES}")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    parser.add_argument("--json-out", default=str(ROOT / "benchmarks" / "results" / "timbre.json"))
    args = parser.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    systems = tuple(x.strip() for x in args.systems.split(",") if x.strip())
    bad = [x for x in systems if x not in SYSTEMS + DIAGNOSES]
    if bad or not systems:
        parser.error(f"--systems {args.systems!r}; allowed: a comma-separated subset of "
                     f"{', '.join(SYSTEMS + DIAGNOSES)}")

    from ensemble.colour import apply_filter, colour_match
    from ensemble.engine import Engine, EngineConfig
    from ensemble.extend import ExtendRequest, extend, render_controls
    from ensemble.features import analyze
    from ensemble.files import write_json_atomic
    from ensemble.jobs.corpus.build import default_soundfont
    from ensemble.jobs.heldout import load_queries
    from ensemble.jobs.timbres import HELD_OUT, TRAINED
    from ensemble.timbre import choose_timbre

    t_run = time.perf_counter()
    heldout = load_queries(args.heldout)
    queries = [q for q in heldout.queries if "notes" in q]
    if len(queries) < len(heldout.queries):
        raise SystemExit(f"{args.heldout}: queries without notes; rebuild with `python -m ensemble heldout build`")
    if args.queries:
        wanted = set(args.queries.split(","))
        queries = [q for q in queries if q["id"] in wanted]
    else:
        queries = queries[::max(1, args.every)]
    programs = [*TRAINED, *HELD_OUT]
    if args.programs:
        keep = {int(p) for p in args.programs.split(",")}
        programs = [p for p in programs if p.program in keep]
    trained_names = {p.name for p in TRAINED}
    engine = Engine.load(EngineConfig(checkpoints_dir=args.checkpoints))
    if not engine.timbres:
        raise SystemExit(f"no timbre decoder in {args.checkpoints}: train one (README, 'Timbre')")
    sf2 = default_soundfont()
    rng = np.random.default_rng(args.seed)
    fc = engine.config.features
    hop = fc.hop_length

    def oracle_heads(full_audio: np.ndarray, n_in: int, w: int):
        """v2's timbre and colour match playing the true continuation's own controls: ([w] head)."""
        f = analyze(full_audio, config=fc, f0_method="yin", with_chroma=False)
        f0 = np.where(f.voiced, f.f0_hz, 0.0).astype(np.float32)
        ld = f.loudness_db.astype(np.float32)
        choice = choose_timbre(engine.timbre_renderer, "auto", audio=full_audio[:n_in], f0_hz=f.f0_hz,
                               voiced=f.voiced, loudness_db=f.loudness_db, end_sample=n_in, hop=hop,
                               sample_rate=SR, config=engine.config.timbre, seed=args.seed)
        a, T = n_in // hop, w // hop + 1
        P = int(round(engine.config.timbre.preroll_seconds * SR / hop))
        rows = [(f0[a:a + T], ld[a:a + T]), (f0[a - T:a], ld[a - T:a])]  # the continuation, the input's own
        preroll = [(f0[a - P:a], ld[a - P:a]), (f0[a - T - P:a - T], ld[a - T - P:a - T])]
        out = render_controls(engine, rows, T * hop, args.seed, choice, preroll)
        colour = colour_match(full_audio[n_in - T * hop:n_in], out[1], sample_rate=SR)
        return choice, [apply_filter(out[:1], colour)[0][:w]]

    base_config = engine.config
    no_key = replace(base_config, continuity=replace(base_config.continuity, key_cost=0.0))
    rows, anchors = [], []
    for qi, q in enumerate(queries):
        n_in = int(round(q["input_seconds"] * SR))
        w = int(WINDOW_S * SR)
        full, tail_in, anchor_d = query_anchors(q, programs, sf2)
        for p in programs:
            d_self, others = anchor_d[p.program]
            d_other = float(np.median(others)) if others else None
            anchors.append({"query": q["id"], "program": p.program, "timbre": p.name,
                            "trained": p.name in trained_names, "d_self": d_self, "d_other": d_other,
                            "d_others": others,
                            "other_positions": [position(x, d_self, d_other) for x in others]})
            audio = full[p.program][:n_in]
            c_in = centroid_hz(audio[n_in - w:])
            for system in systems:
                timbre = {"v2": "auto", "v2-no-key": "auto", "guitar": "guitar", "v1-guitar": "guitar",
                          "oracle": "auto"}.get(system) or str(rng.choice(sorted(trained_names)))
                engine.config = no_key if system == "v2-no-key" else base_config
                t = time.perf_counter()
                if system == "oracle":
                    choice, heads = oracle_heads(full[p.program], n_in, w)
                else:
                    ext = extend(engine, audio, ExtendRequest(seconds=q["total_seconds"], k=args.k, seed=args.seed,
                                                              followers=("Drums",), timbre=timbre,
                                                              match_colour=system != "v1-guitar",
                                                              continuity=system != "v1-guitar"))
                    choice, heads = ext.timbre, [leader[n_in:n_in + w] for leader in ext.leaders]
                wall = time.perf_counter() - t
                for rank, head in enumerate(heads, start=1):
                    d = distance(tail_in[p.program], mfcc_mean(head))
                    c_out = centroid_hz(head)
                    rows.append({
                        "query": q["id"], "program": p.program, "program_timbre": p.name,
                        "trained": p.name in trained_names, "system": system, "rank": rank,
                        "timbre": choice.name, "chosen_by": choice.chosen_by,
                        "own_timbre": choice.name == p.name,
                        "resynthesis_mrstft": choice.distances.get(choice.name) if choice.distances else None,
                        "d": d, "d_self": d_self, "d_other": d_other,
                        "position": position(d, d_self, d_other),
                        "centroid_ratio": (c_out / c_in) if c_out and c_in else None, "extend_s": round(wall, 3)})
            here = [r for r in rows if r["query"] == q["id"] and r["program"] == p.program]
            print(f"[{qi + 1}/{len(queries)}] {q['id']} {p.name:<14} {systems[0]} -> "
                  f"{next(r['timbre'] for r in here if r['system'] == systems[0])}; positions "
                  + ", ".join(f"{s} {_median([r['position'] for r in here if r['system'] == s])}" for s in systems),
                  flush=True)

    # ---- does the measure separate its anchors?
    sep = {}
    for label, keep in (("trained", True), ("held_out", False), ("all", None)):
        a = [x for x in anchors if keep is None or x["trained"] == keep]
        ok = [x["d_self"] is not None and x["d_other"] is not None and x["d_self"] < x["d_other"] for x in a]
        sep[label] = {"pairs": len(a), "d_self_below_d_other": round(float(np.mean(ok)), 4) if ok else None,
                      "auc_self_vs_others": _auc([x["d_self"] for x in a if x["d_self"] is not None],
                                                 [y for x in a for y in x["d_others"]]),
                      "median_position_of_true_continuation_in_other_programs":
                          _median([y for x in a for y in x["other_positions"]])}
    summary = {}
    for system in systems:
        for label, keep in (("trained", True), ("held_out", False)):
            r = [x for x in rows if x["system"] == system and x["trained"] == keep]
            pos = [x["position"] for x in r]
            summary[f"{system}/{label}"] = {
                "candidates": len(r), "position_median": _median(pos),
                "position_undefined": sum(p is None for p in pos),
                "centroid_ratio_median": _median([x["centroid_ratio"] for x in r]),
                "abs_log2_centroid_ratio_median": _median([abs(math.log2(x["centroid_ratio"])) for x in r
                                                           if x["centroid_ratio"]]),
                "own_timbre_share": round(float(np.mean([x["own_timbre"] for x in r])), 4) if r else None,
                "resynthesis_mrstft_median": _median([x["resynthesis_mrstft"] for x in r]),
                "extend_s_median": _median([x["extend_s"] for x in r])}
    chosen = {}
    for x in rows:
        if x["system"] == systems[0] and x["rank"] == 1:
            chosen.setdefault(x["program_timbre"], {}).setdefault(x["timbre"], 0)
            chosen[x["program_timbre"]][x["timbre"]] += 1
    accept = {
        "held_out_position_median_le_0.3": (summary["v2/held_out"]["position_median"] or 9) <= 0.3,
        "trained_position_median_le_0.2": (summary["v2/trained"]["position_median"] or 9) <= 0.2,
    } if "v2" in systems else {}
    print("\nanchors (does the timbre position separate the same instrument from another?)")
    for k, v in sep.items():
        print(f"  {k:<9} pairs {v['pairs']:>4}  d_self < d_other {v['d_self_below_d_other']}  "
              f"AUC {v['auc_self_vs_others']}  true continuation in other programs: position "
              f"{v['median_position_of_true_continuation_in_other_programs']}")
    print(f"\n{'system/programs':<18} {'cands':>5} {'position':>9} {'undef':>5} {'centroid':>9} "
          f"{'own timbre':>10} {'resynth':>8} {'extend s':>8}")
    for k, v in summary.items():
        print(f"{k:<18} {v['candidates']:>5} {v['position_median']!s:>9} {v['position_undefined']:>5} "
              f"{v['centroid_ratio_median']!s:>9} {v['own_timbre_share']!s:>10} "
              f"{v['resynthesis_mrstft_median']!s:>8} {v['extend_s_median']!s:>8}")
    print(f"\n{systems[0]}'s Top-1 timbre per program:", json.dumps(chosen))
    print("acceptance:", json.dumps(accept))
    result = {"command": "python -m benchmarks.timbre " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in ("", None)),
              "queries": [q["id"] for q in queries], "programs": [p.program for p in programs],
              "systems": list(systems), "k": args.k, "seed": args.seed, "versions": engine.versions,
              "anchors": sep, "summary": summary,
              "v2_top1_timbre_per_program": chosen, "acceptance": accept,
              "wall_s": round(time.perf_counter() - t_run, 1), "rows": rows, "anchor_rows": anchors}
    write_json_atomic(args.json_out, result)
    print(json.dumps({k: result[k] for k in ("anchors", "summary", "acceptance", "wall_s")}))


if __name__ == "__main__":
    main()
