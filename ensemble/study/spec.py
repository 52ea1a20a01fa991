"""A study file (YAML): what a listening study plays, to whom, with which controls.

:func:`load_spec` reads and checks the file; every mistake raises one :class:`EnsembleError` naming
the field (as a dotted path, e.g. ``stimuli[1].clip``), the value and what is allowed. Unknown keys are
refused, so a typo never silently falls back to a default. Clip paths are relative to the study file.

A study file::

    name: pilot                     # the study's name: [a-z0-9_-], served at ?study=pilot
    title: Which continuation fits?
    instructions: Rank the continuations ...
    consent: Your rankings are stored without your name ...
    rounds_per_rater: 2             # 1..number of stimuli
    seed: 7                         # rater order, candidate order, assignment ties
    defaults: {target_seconds: 11, k: 2, alpha: 0.8, beta: 0.6, followers: [Bass, Drums, Keys], seed: 0}
    conditions:                     # the systems compared; each gives k candidates per round
      - {name: composite, ranking: composite}
    controls:                       # in every round: a hidden reference and a low anchor
      anchor: {pitch_semitones: 1.0, delay_ms: 200, gain_db: 6.0}
      screening_threshold: 0.15     # flag a rater who ranks the anchor above the reference more often
    listening: {min_heard_seconds: 5.0, preroll_seconds: 3.0}
    stimuli:                        # clips cut from longer recordings: the true continuation is known
      - {id: s1, clip: clips/a.wav, start_seconds: 0, input_seconds: 8}

Each stimulus's recording must reach ``start_seconds + target_seconds`` (checked here, before anything
renders): the hidden reference is the recording's own next seconds, performed by the same band.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf

from ensemble.errors import EnsembleError

__all__ = ["Condition", "AnchorFaults", "Stimulus", "StudySpec", "load_spec", "parse_spec",
           "REFERENCE", "ANCHOR", "RANKINGS", "NAME_PATTERN", "MAX_SHOWN"]

REFERENCE = "reference"  # condition label of the hidden reference
ANCHOR = "anchor"  # condition label of the low anchor
RANKINGS = ("composite", "random")  # ensemble.rag.RANKINGS (not imported: a spec needs no models)
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_K = 10
MAX_SHOWN = 12  # candidates one round may show (the page lays out this many rank controls)


@dataclass(frozen=True)
class Condition:
    """One system compared: ``ranking`` as :class:`ensemble.extend.ExtendRequest` takes it."""

    name: str
    ranking: str = "composite"


@dataclass(frozen=True)
class AnchorFaults:
    """The planted seam faults of the low anchor (applied to the continuation after the seam).

    Attributes:
        pitch_semitones: pitch shift of the continuation (semitones, up is positive).
        delay_ms: the continuation starts this late (silence at the seam), ms.
        gain_db: level change of the continuation, dB.
    """

    pitch_semitones: float = 1.0
    delay_ms: float = 200.0
    gain_db: float = 6.0


@dataclass(frozen=True)
class Stimulus:
    """One round's material: the input is ``clip[start, start + input)``; candidates run to ``target``."""

    id: str
    clip: Path
    start_seconds: float
    input_seconds: float
    target_seconds: float
    k: int
    alpha: float | None
    beta: float | None
    followers: tuple[str, ...]
    seed: int


@dataclass(frozen=True)
class StudySpec:
    """A checked study file (see the module docstring)."""

    name: str
    title: str
    instructions: str
    consent: str
    rounds_per_rater: int
    seed: int
    conditions: tuple[Condition, ...]
    stimuli: tuple[Stimulus, ...]
    anchor: AnchorFaults = field(default_factory=AnchorFaults)
    anchor_base: str = ""  # "<condition>@<rank>" the anchor is made from; default first condition @1
    screening_threshold: float = 0.15
    min_heard_seconds: float = 5.0
    preroll_seconds: float = 3.0

    def labels(self, stimulus: Stimulus) -> list[str]:
        """Condition labels of one round's candidates, in prepared order: each condition's
        ``name@rank`` for rank 1..k, then the reference and the anchor."""
        return [f"{c.name}@{r}" for c in self.conditions for r in range(1, stimulus.k + 1)] + [REFERENCE, ANCHOR]

    def to_dict(self) -> dict:
        """JSON-ready (clip paths as given, resolved)."""
        return {"name": self.name, "title": self.title, "instructions": self.instructions,
                "consent": self.consent, "rounds_per_rater": self.rounds_per_rater, "seed": self.seed,
                "conditions": [vars(c) for c in self.conditions],
                "stimuli": [{**vars(s), "clip": str(s.clip), "followers": list(s.followers)}
                            for s in self.stimuli],
                "anchor": vars(self.anchor), "anchor_base": self.anchor_base,
                "screening_threshold": self.screening_threshold,
                "min_heard_seconds": self.min_heard_seconds, "preroll_seconds": self.preroll_seconds}


# ------------------------------------------------------------------------------------------ checks

_TOP = {"name", "title", "instructions", "consent", "rounds_per_rater", "seed", "defaults", "conditions",
        "controls", "listening", "stimuli"}
_SETTINGS = {"target_seconds", "k", "alpha", "beta", "followers", "seed"}
_STIMULUS = {"id", "clip", "start_seconds", "input_seconds"} | _SETTINGS
_FOLLOWERS = ("Bass", "Drums", "Keys")  # ensemble.perform.FOLLOWERS, checked again when rendering


def _mapping(where: str, value: Any, allowed: set[str], *, required: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        raise EnsembleError(f"{where}: expected a mapping (key: value), got {type(value).__name__} {value!r}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise EnsembleError(f"{where}: unknown field{'s' if len(unknown) > 1 else ''} {unknown}; "
                            f"allowed: {sorted(allowed)}")
    missing = [k for k in required if k not in value]
    if missing:
        raise EnsembleError(f"{where}: missing field{'s' if len(missing) > 1 else ''} {missing}")
    return value


def _number(where: str, value: Any, *, low: float | None = None, high: float | None = None,
            strict_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise EnsembleError(f"{where} = {value!r}: expected a finite number")
    x = float(value)
    if low is not None and (x < low or (strict_low and x == low)):
        raise EnsembleError(f"{where} = {value!r}; allowed: {'>' if strict_low else '>='} {low:g}"
                            + ("" if high is None else f" and <= {high:g}"))
    if high is not None and x > high:
        raise EnsembleError(f"{where} = {value!r}; allowed: at most {high:g}")
    return x


def _integer(where: str, value: Any, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EnsembleError(f"{where} = {value!r}: expected a whole number"
                            + (f" in {low}..{high}" if high is not None else f" >= {low}"))
    if value < low or (high is not None and value > high):
        raise EnsembleError(f"{where} = {value!r}; allowed: "
                            + (f"{low}..{high}" if high is not None else f">= {low}"))
    return int(value)


def _text(where: str, value: Any, *, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise EnsembleError(f"{where} = {value!r}: expected {'non-empty ' if required else ''}text")
    return value.strip()


def _name(where: str, value: Any) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise EnsembleError(f"{where} = {value!r}; allowed: 1-64 characters of a-z, 0-9, '_' and '-', "
                            "starting with a letter or digit")
    return value


def _followers(where: str, value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise EnsembleError(f"{where} = {value!r}; allowed: a non-empty list of {list(_FOLLOWERS)}")
    lookup = {f.lower(): f for f in _FOLLOWERS}
    bad = [x for x in items if not isinstance(x, str) or x.strip().lower() not in lookup]
    if bad:
        raise EnsembleError(f"{where} = {value!r}: unknown {bad}; allowed: a non-empty list of {list(_FOLLOWERS)}")
    chosen = {lookup[x.strip().lower()] for x in items}
    return tuple(f for f in _FOLLOWERS if f in chosen)


def _settings(where: str, d: dict, base: dict) -> dict:
    """The render settings of ``d`` over ``base`` (both already checked for unknown keys)."""
    out = dict(base)
    if "target_seconds" in d:
        out["target_seconds"] = _number(f"{where}.target_seconds", d["target_seconds"], low=0, strict_low=True,
                                        high=600)
    if "k" in d:
        out["k"] = _integer(f"{where}.k", d["k"], low=1, high=MAX_K)
    for w in ("alpha", "beta"):
        if w in d:
            out[w] = None if d[w] is None else _number(f"{where}.{w}", d[w], low=0, high=10)
    if "followers" in d:
        out["followers"] = _followers(f"{where}.followers", d["followers"])
    if "seed" in d:
        out["seed"] = _integer(f"{where}.seed", d["seed"], low=0)
    return out


def parse_spec(data: Any, *, base_dir: Path) -> StudySpec:
    """Check a parsed study file (see the module docstring); clip paths resolve against ``base_dir``.

    Raises:
        EnsembleError: naming the field, the value and what is allowed.
    """
    d = _mapping("study", data, _TOP, required=("name", "conditions", "stimuli"))
    name = _name("name", d["name"])
    defaults = _settings("defaults", _mapping("defaults", d.get("defaults") or {}, _SETTINGS),
                         {"target_seconds": None, "k": 4, "alpha": None, "beta": None,
                          "followers": _FOLLOWERS, "seed": 0})

    conds_raw = d["conditions"]
    if not isinstance(conds_raw, list) or not conds_raw:
        raise EnsembleError(f"conditions = {conds_raw!r}: expected a non-empty list of {{name, ranking}}")
    conditions = []
    for i, c in enumerate(conds_raw):
        c = _mapping(f"conditions[{i}]", c, {"name", "ranking"}, required=("name",))
        cname = _name(f"conditions[{i}].name", c["name"])
        if cname in (REFERENCE, ANCHOR):
            raise EnsembleError(f"conditions[{i}].name = {cname!r} is reserved for the controls; choose another")
        ranking = c.get("ranking", "composite")
        if ranking not in RANKINGS:
            raise EnsembleError(f"conditions[{i}].ranking = {ranking!r}; allowed: {list(RANKINGS)}")
        conditions.append(Condition(cname, ranking))
    names = [c.name for c in conditions]
    if len(set(names)) != len(names):
        raise EnsembleError(f"conditions: names {names} must be distinct")

    stim_raw = d["stimuli"]
    if not isinstance(stim_raw, list) or not stim_raw:
        raise EnsembleError(f"stimuli = {stim_raw!r}: expected a non-empty list of {{id, clip, input_seconds, ...}}")
    stimuli = []
    for i, s in enumerate(stim_raw):
        where = f"stimuli[{i}]"
        s = _mapping(where, s, _STIMULUS, required=("id", "clip", "input_seconds"))
        sid = _name(f"{where}.id", s["id"])
        clip_text = _text(f"{where}.clip", s["clip"], required=True)
        clip = (base_dir / clip_text).resolve()
        if not clip.is_file():
            raise EnsembleError(f"{where}.clip = {clip_text!r}: no such file ({clip}); clip paths are relative "
                                "to the study file")
        start = _number(f"{where}.start_seconds", s.get("start_seconds", 0.0), low=0)
        inp = _number(f"{where}.input_seconds", s["input_seconds"], low=2.0)
        st = _settings(where, s, defaults)
        if st["target_seconds"] is None:
            raise EnsembleError(f"{where}.target_seconds: missing (give it here or under defaults)")
        if st["target_seconds"] <= inp:
            raise EnsembleError(f"{where}.target_seconds = {st['target_seconds']:g} must be longer than "
                                f"input_seconds = {inp:g}")
        try:
            length = sf.info(str(clip)).duration
        except (sf.LibsndfileError, RuntimeError, TypeError):
            raise EnsembleError(f"{where}.clip = {clip_text!r} is not an audio file libsndfile can read") from None
        if start + st["target_seconds"] > length + 1e-6:
            raise EnsembleError(
                f"stimulus {sid!r}: clip {clip.name!r} is {length:.2f} s long; the hidden reference needs "
                f"start_seconds + target_seconds = {start + st['target_seconds']:.2f} s of it")
        stimuli.append(Stimulus(id=sid, clip=clip, start_seconds=start, input_seconds=inp,
                                target_seconds=st["target_seconds"], k=st["k"], alpha=st["alpha"],
                                beta=st["beta"], followers=st["followers"], seed=st["seed"]))
    for i, s in enumerate(stimuli):
        shown = len(conditions) * s.k + 2
        if shown > MAX_SHOWN:
            raise EnsembleError(f"stimuli[{i}].k = {s.k} with {len(conditions)} conditions shows {shown} candidates "
                                f"per round (k per condition + reference + anchor); allowed: at most {MAX_SHOWN}")
    ids = [s.id for s in stimuli]
    if len(set(ids)) != len(ids):
        raise EnsembleError(f"stimuli: ids {ids} must be distinct")

    rpr = _integer("rounds_per_rater", d.get("rounds_per_rater", len(stimuli)), low=1, high=len(stimuli))
    seed = _integer("seed", d.get("seed", 0), low=0)

    controls = _mapping("controls", d.get("controls") or {}, {"anchor", "anchor_base", "screening_threshold"})
    a = _mapping("controls.anchor", controls.get("anchor") or {}, {"pitch_semitones", "delay_ms", "gain_db"})
    anchor = AnchorFaults(
        pitch_semitones=_number("controls.anchor.pitch_semitones", a.get("pitch_semitones", 1.0), low=-12,
                                high=12),
        delay_ms=_number("controls.anchor.delay_ms", a.get("delay_ms", 200.0), low=0, high=2000),
        gain_db=_number("controls.anchor.gain_db", a.get("gain_db", 6.0), low=-24, high=24))
    if anchor == AnchorFaults(0.0, 0.0, 0.0):
        raise EnsembleError("controls.anchor: every fault is 0; allowed: at least one of pitch_semitones, "
                            "delay_ms, gain_db non-zero (an anchor without a fault is no anchor)")
    base = controls.get("anchor_base", f"{conditions[0].name}@1")
    valid = {f"{c.name}@{r}" for c in conditions for r in range(1, min(s.k for s in stimuli) + 1)}
    if base not in valid:
        raise EnsembleError(f"controls.anchor_base = {base!r}; allowed: one of {sorted(valid)}")
    threshold = _number("controls.screening_threshold", controls.get("screening_threshold", 0.15), low=0,
                        high=1)
    listening = _mapping("listening", d.get("listening") or {}, {"min_heard_seconds", "preroll_seconds"})
    min_heard = _number("listening.min_heard_seconds", listening.get("min_heard_seconds", 5.0), low=0, high=60)
    preroll = _number("listening.preroll_seconds", listening.get("preroll_seconds", 3.0), low=0, high=60)
    for s in stimuli:
        cont = s.target_seconds - s.input_seconds
        if min_heard > s.target_seconds:
            raise EnsembleError(f"listening.min_heard_seconds = {min_heard:g} is longer than stimulus "
                                f"{s.id!r} ({s.target_seconds:g} s)")
        if cont <= anchor.delay_ms / 1000.0:
            raise EnsembleError(f"controls.anchor.delay_ms = {anchor.delay_ms:g} is not shorter than stimulus "
                                f"{s.id!r}'s continuation ({cont:g} s)")
    return StudySpec(name=name, title=_text("title", d.get("title")) or name,
                     instructions=_text("instructions", d.get("instructions")),
                     consent=_text("consent", d.get("consent")), rounds_per_rater=rpr, seed=seed,
                     conditions=tuple(conditions), stimuli=tuple(stimuli), anchor=anchor, anchor_base=base,
                     screening_threshold=threshold, min_heard_seconds=min_heard, preroll_seconds=preroll)


def load_spec(path: str | Path) -> StudySpec:
    """Read and check a study file (YAML).

    Raises:
        EnsembleError: an unreadable file, YAML that does not parse, or any field :func:`parse_spec` refuses.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EnsembleError(f"study file {str(path)!r}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EnsembleError(f"study file {str(path)!r} is not valid YAML: {exc}") from None
    return parse_spec(data, base_dir=path.resolve().parent)
