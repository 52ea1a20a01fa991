"""Harmony of a leader clip: key, a root per harmonic unit (beat or half bar), chords and voicings.

The leader's pitch content per frame (:func:`pitch_class_evidence`) mixes a one-hot of its f0's
pitch class with its chroma, weighted by the frame's activity. The key comes from Krumhansl-Kessler
profiles on the whole clip (:func:`ensemble.music.estimate_key`). Per harmonic unit the *root* is decoded by a
small hidden Markov model over the 12 roots relative to the key (:class:`HarmonyModel`):

* emission: multinomial naive Bayes, ``sum_pc E[u, pc] * log P(pc | root)`` with the unit's evidence
  ``E[u]`` normalised to sum ``evidence_scale`` (frames of one unit are not independent, so they
  count as a few notes, not as hundreds of frames);
* prior ``log P(root)`` and transitions ``log P(root_u | root_u-1)``;
* Viterbi over the units (inactive units carry no evidence, so they keep the previous root).

Two models share this structure: :meth:`HarmonyModel.rules` (hand-set: diatonic triads as emission
templates, a key prior favouring I/IV/V/vi, a stay probability) and a *learned* model whose counts
are fitted on the BabyBand train split (:func:`fit_harmony_model`; the bass pitch class of each beat
given the leader's key-relative pitch content) and shipped with the drum database.

The chord of a unit is the diatonic triad on its root (:func:`chord_for_root`); the bass plays the
root in the bass octave and the keys play close voicings of the triad (:func:`bass_midi`,
:func:`keys_voicings`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ensemble.errors import EnsembleError
from ensemble.music import MODES, PC_NAMES, Key, hz_to_midi

__all__ = [
    "HarmonyModel",
    "pitch_class_evidence",
    "unit_evidence",
    "decode_roots",
    "chord_for_root",
    "chord_name",
    "bass_midi",
    "keys_voicings",
    "unit_labels",
    "harmony_counts",
]

TRIADS = {"maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6)}
# Triad quality on each key-relative root (natural minor, with the harmonic-minor V);
# roots outside the scale get a major triad (secondary dominants, borrowed chords).
_QUALITY = {
    "major": {0: "maj", 2: "min", 4: "min", 5: "maj", 7: "maj", 9: "min", 11: "dim"},
    "minor": {0: "min", 2: "dim", 3: "maj", 5: "min", 7: "maj", 8: "maj", 10: "maj"},
}
# Rule-model prior weight of each key-relative root (I, V, IV strongest, then vi, ii...).
_RULE_PRIOR = {
    "major": {0: 1.0, 7: 0.8, 5: 0.7, 9: 0.45, 2: 0.35, 4: 0.15, 11: 0.05},
    "minor": {0: 1.0, 7: 0.8, 5: 0.7, 8: 0.45, 3: 0.45, 10: 0.35, 2: 0.05},
}


def pitch_class_evidence(f0_hz: np.ndarray, voiced: np.ndarray, chroma: np.ndarray | None,
                         weight: np.ndarray, *, f0_weight: float = 0.7) -> np.ndarray:
    """Per-frame pitch-class evidence of the leader.

    Args:
        f0_hz: [T] Hz, 0 where unvoiced.
        voiced: [T] bool.
        chroma: [12, T] max-normalised chroma, or None (f0 only).
        weight: [T] >= 0 frame weight (0 where the leader is inactive).
        f0_weight: share of the f0 one-hot (the rest is chroma); 1 = f0 only.

    Returns:
        [T, 12] non-negative evidence; a frame's row sums to its weight (0 for silent frames).
    """
    f0_hz = np.asarray(f0_hz, dtype=np.float64)
    T = len(f0_hz)
    if np.shape(voiced) != (T,) or np.shape(weight) != (T,):
        raise EnsembleError(f"f0_hz {f0_hz.shape}, voiced {np.shape(voiced)} and weight "
                            f"{np.shape(weight)} must all be [T]")
    if not 0.0 <= f0_weight <= 1.0:
        raise EnsembleError(f"f0_weight {f0_weight} must be in [0, 1]")
    ev = np.zeros((T, 12))
    ok = np.asarray(voiced, bool) & (f0_hz > 0)
    pcs = np.mod(np.round(hz_to_midi(np.where(ok, f0_hz, 440.0))), 12).astype(int)
    onehot = np.zeros((T, 12))
    onehot[np.arange(T)[ok], pcs[ok]] = 1.0
    if chroma is not None:
        chroma = np.asarray(chroma, dtype=np.float64)
        if chroma.shape != (12, T):
            raise EnsembleError(f"chroma has shape {chroma.shape}; allowed: (12, {T})")
        c = chroma.T ** 2  # sharpen: the strongest classes dominate a frame
        c = c / np.maximum(c.sum(axis=1, keepdims=True), 1e-9)
        f0w = np.where(ok, f0_weight, 0.0)[:, None]
        ev = f0w * onehot + (1.0 - f0w) * c
    else:
        ev = onehot
    return ev * np.asarray(weight, dtype=np.float64)[:, None]


def unit_evidence(evidence: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Sum frame evidence over harmonic units.

    Args:
        evidence: [T, 12].
        bounds: [U + 1] increasing frame indices; unit u covers frames ``bounds[u]:bounds[u+1]``.

    Returns:
        [U, 12] summed evidence.
    """
    bounds = np.clip(np.asarray(bounds, dtype=np.int64), 0, len(evidence))
    csum = np.vstack([np.zeros((1, 12)), np.cumsum(evidence, axis=0)])
    return csum[bounds[1:]] - csum[bounds[:-1]]


def chord_for_root(root: int, key: Key) -> tuple[int, str, tuple[int, int, int]]:
    """The diatonic triad on ``root`` (pitch class) in ``key``.

    Returns:
        (root pitch class, quality "maj"|"min"|"dim", pitch classes (root, third, fifth)).
    """
    rel = (int(root) - key.tonic) % 12
    quality = _QUALITY[key.mode].get(rel, "maj")
    pcs = tuple((int(root) + i) % 12 for i in TRIADS[quality])
    return int(root) % 12, quality, pcs  # type: ignore[return-value]


def chord_name(root: int, quality: str) -> str:
    """E.g. (9, "min") -> "Am"."""
    return PC_NAMES[int(root) % 12] + {"maj": "", "min": "m", "dim": "dim"}[quality]


@dataclass(frozen=True)
class HarmonyModel:
    """HMM over the 12 key-relative roots, one parameter set per mode (see the module docstring).

    Attributes:
        name: "rules" or "learned" (reported in perform.json).
        log_prior: [2, 12] log P(root) per mode (major, minor).
        log_emission: [2, 12, 12] log P(leader pitch class | root), rows = roots.
        log_transition: [2, 12, 12] log P(root_u | root_u-1), rows = previous root.
        evidence_scale: a unit's evidence is normalised to sum this (effective notes per unit).
    """

    name: str
    log_prior: np.ndarray
    log_emission: np.ndarray
    log_transition: np.ndarray
    evidence_scale: float = 3.0

    def __post_init__(self) -> None:
        shapes = {"log_prior": (2, 12), "log_emission": (2, 12, 12), "log_transition": (2, 12, 12)}
        for field, shape in shapes.items():
            value = np.asarray(getattr(self, field), dtype=np.float64)
            if value.shape != shape or np.isnan(value).any():
                raise EnsembleError(f"HarmonyModel.{field} has shape {value.shape}; allowed: {shape}, "
                                    "no NaN")
            object.__setattr__(self, field, value)
        if not self.evidence_scale > 0:
            raise EnsembleError(f"evidence_scale {self.evidence_scale} must be > 0")

    @classmethod
    def rules(cls, *, stay: float = 0.6, evidence_scale: float = 3.0,
              non_chord: float = 0.15) -> HarmonyModel:
        """Hand-set model: diatonic triads as templates, a prior on the common degrees.

        Args:
            stay: probability that the root stays the same from one unit to the next.
            evidence_scale: see the class docstring.
            non_chord: emission weight of a non-chord tone relative to a chord tone.
        """
        if not 0.0 < stay < 1.0:
            raise EnsembleError(f"stay probability {stay} must be in (0, 1)")
        prior = np.full((2, 12), 1e-3)
        emis = np.zeros((2, 12, 12))
        for m, mode in enumerate(MODES):
            key = Key(0, mode, 1.0)
            for rel in range(12):
                prior[m, rel] += _RULE_PRIOR[mode].get(rel, 0.0)
                _, _, pcs = chord_for_root(rel, key)
                row = np.full(12, non_chord)
                row[list(pcs)] = 0.8
                row[pcs[0]] = 1.0
                emis[m, rel] = row / row.sum()
        prior /= prior.sum(axis=1, keepdims=True)
        trans = np.full((12, 12), (1.0 - stay) / 11.0)
        np.fill_diagonal(trans, stay)
        return cls("rules", np.log(prior), np.log(emis), np.log(np.stack([trans, trans])),
                   evidence_scale)

    @classmethod
    def from_counts(cls, prior_counts: np.ndarray, emission_counts: np.ndarray,
                    transition_counts: np.ndarray, *, smoothing: float = 1.0,
                    evidence_scale: float = 3.0) -> HarmonyModel:
        """A learned model from (smoothed) counts: [2, 12], [2, 12, 12], [2, 12, 12]."""
        def norm(c: np.ndarray) -> np.ndarray:
            c = np.asarray(c, dtype=np.float64) + smoothing
            return np.log(c / c.sum(axis=-1, keepdims=True))
        return cls("learned", norm(prior_counts), norm(emission_counts), norm(transition_counts),
                   evidence_scale)

    def to_dict(self) -> dict:
        return {"name": self.name, "evidence_scale": self.evidence_scale,
                "log_prior": np.round(self.log_prior, 6).tolist(),
                "log_emission": np.round(self.log_emission, 6).tolist(),
                "log_transition": np.round(self.log_transition, 6).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> HarmonyModel:
        try:
            return cls(str(d["name"]), np.asarray(d["log_prior"]), np.asarray(d["log_emission"]),
                       np.asarray(d["log_transition"]), float(d["evidence_scale"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise EnsembleError(f"harmony model JSON is not usable ({type(exc).__name__}: {exc}); "
                                "rebuild it with `python -m ensemble drums build`") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def decode_roots(units: np.ndarray, key: Key, model: HarmonyModel,
                 active: np.ndarray | None = None) -> np.ndarray:
    """Viterbi decoding of one root per harmonic unit.

    Args:
        units: [U, 12] summed pitch-class evidence per unit (absolute pitch classes, C first).
        key: the clip's key; evidence and roots are handled relative to its tonic.
        model: the HMM.
        active: [U] bool, units with leader activity (others get no emission). Default: units with
            any evidence.

    Returns:
        [U] int absolute root pitch classes (0..11).
    """
    units = np.asarray(units, dtype=np.float64)
    if units.ndim != 2 or units.shape[1] != 12:
        raise EnsembleError(f"unit evidence must be [U, 12], got {units.shape}")
    U = len(units)
    if U == 0:
        return np.zeros(0, dtype=np.int64)
    total = units.sum(axis=1)
    if active is None:
        active = total > 0
    active = np.asarray(active, bool) & (total > 0)
    rel = np.roll(units, -key.tonic, axis=1)  # [U, 12] key-relative pitch classes
    rel = rel / np.maximum(total, 1e-12)[:, None] * model.evidence_scale
    m = key.mode_index
    emis = rel @ model.log_emission[m].T  # [U, 12 roots]
    emis = np.where(active[:, None], emis, 0.0)
    trans = model.log_transition[m]
    score = model.log_prior[m] + emis[0]
    back = np.zeros((U, 12), dtype=np.int64)
    for u in range(1, U):
        cand = score[:, None] + trans  # [prev, next]
        back[u] = np.argmax(cand, axis=0)
        score = cand[back[u], np.arange(12)] + emis[u]
    path = np.zeros(U, dtype=np.int64)
    path[-1] = int(np.argmax(score))
    for u in range(U - 1, 0, -1):
        path[u - 1] = back[u, path[u]]
    return (path + key.tonic) % 12


def bass_midi(roots: np.ndarray, *, low: int = 28, high: int = 45, start: float = 36.0) -> np.ndarray:
    """Place each root in the bass range [low, high] (MIDI), near the previous note.

    Args:
        roots: [U] pitch classes.
        low, high: MIDI range (28..45 = E1..A2 = 41.2..110 Hz); needs ``high - low >= 11``.
        start: the note the line starts near.

    Returns:
        [U] int MIDI notes, each ``% 12 == root``.
    """
    if high - low < 11:
        raise EnsembleError(f"bass range {low}..{high} must span at least 12 semitones")
    out = np.zeros(len(roots), dtype=np.int64)
    prev = float(start)
    centre = (low + high) / 2.0
    for i, pc in enumerate(np.asarray(roots, dtype=np.int64)):
        cands = np.arange(low, high + 1)
        cands = cands[cands % 12 == pc % 12]
        # near the previous note, pulled gently to the middle of the range (no drifting to an edge)
        cost = np.abs(cands - prev) + 0.25 * np.abs(cands - centre)
        out[i] = int(cands[np.argmin(cost)])
        prev = float(out[i])
    return out


def keys_voicings(chords: list[tuple[int, ...]], *, low: int = 48, high: int = 72) -> np.ndarray:
    """Close-position voicings of triads in [low, high], each nearest the previous one.

    Args:
        chords: U tuples of 3 pitch classes.
        low, high: MIDI range (48..72 = C3..C5).

    Returns:
        [U, 3] int MIDI notes, ascending per row.
    """
    if high - low < 16:
        raise EnsembleError(f"keys range {low}..{high} must span at least 17 semitones")
    out = np.zeros((len(chords), 3), dtype=np.int64)
    prev: np.ndarray | None = None
    centre = (low + high) / 2.0
    cache: dict[tuple[int, ...], list[np.ndarray]] = {}
    for i, pcs in enumerate(chords):
        if len(pcs) != 3:
            raise EnsembleError(f"keys voicings need triads, got {pcs}")
        key = tuple(int(p) % 12 for p in pcs)
        if key not in cache:
            options = []
            for r in range(3):
                rot = key[r:] + key[:r]
                for base in range(low, high + 1):
                    if base % 12 != rot[0]:
                        continue
                    notes = [base]
                    for pc in rot[1:]:
                        p = notes[-1] + 1
                        while p % 12 != pc:
                            p += 1
                        notes.append(p)
                    if notes[-1] <= high:
                        options.append(np.array(notes))
            cache[key] = options
        options = cache[key]
        if prev is None:
            costs = [abs(float(o.mean()) - centre) for o in options]
        else:
            costs = [float(np.abs(o - prev).sum()) + 0.1 * abs(float(o.mean()) - centre)
                     for o in options]
        out[i] = options[int(np.argmin(costs))]
        prev = out[i]
    return out


def unit_labels(f0_hz: np.ndarray, voiced: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """The most common pitch class of a (ground-truth) f0 curve in each unit.

    Args:
        f0_hz: [T] Hz, 0 where unvoiced.
        voiced: [T] bool.
        bounds: [U + 1] frame indices of the units.

    Returns:
        [U] int pitch classes, -1 for units without a voiced frame.
    """
    f0_hz = np.asarray(f0_hz, dtype=np.float64)
    ok = np.asarray(voiced, bool) & (f0_hz > 0)
    pcs = np.mod(np.round(hz_to_midi(np.where(ok, f0_hz, 440.0))), 12).astype(np.int64)
    onehot = np.zeros((len(f0_hz), 12))
    onehot[np.flatnonzero(ok), pcs[ok]] = 1.0
    counts = unit_evidence(onehot, bounds)  # [U, 12]
    return np.where(counts.sum(axis=1) > 0, np.argmax(counts, axis=1), -1)


def harmony_counts(units: np.ndarray, key: Key, labels: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts for a learned :class:`HarmonyModel` from one clip.

    Args:
        units: [U, 12] the leader's pitch-class evidence per unit (absolute).
        key: the key the performer estimates for the clip (counts are relative to its tonic).
        labels: [U] ground-truth bass pitch class per unit (-1 = no bass).

    Returns:
        (prior [2, 12], emission [2, 12, 12], transition [2, 12, 12]) counts; only the rows of
        ``key``'s mode are non-zero. Emission adds each unit's normalised evidence to its label's
        row, so a unit counts once however long it is.
    """
    units = np.asarray(units, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if units.shape != (len(labels), 12):
        raise EnsembleError(f"units {units.shape} and labels {labels.shape} must be [U, 12] and [U]")
    m = key.mode_index
    prior, emis, trans = np.zeros((2, 12)), np.zeros((2, 12, 12)), np.zeros((2, 12, 12))
    rel_units = np.roll(units, -key.tonic, axis=1)
    rel_lab = np.where(labels >= 0, (labels - key.tonic) % 12, -1)
    total = rel_units.sum(axis=1)
    for u, r in enumerate(rel_lab):
        if r < 0:
            continue
        prior[m, r] += 1
        if total[u] > 0:
            emis[m, r] += rel_units[u] / total[u]
        if u > 0 and rel_lab[u - 1] >= 0:
            trans[m, rel_lab[u - 1], r] += 1
    return prior, emis, trans
