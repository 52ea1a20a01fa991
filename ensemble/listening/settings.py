"""What a round is asked: the upload, decoded and checked, and the page's settings, checked.

Both are checked against the engine's :class:`~ensemble.engine.Limits` (declared once in
:class:`~ensemble.engine.EngineConfig`) and its timbres (``engine.timbres``), so the page, the API and
the library refuse the same values with the same words: each message names the field, the value and
what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ensemble.audio import LoadedAudio, load_audio
from ensemble.engine import Limits
from ensemble.errors import EnsembleError
from ensemble.extend import ExtendRequest
from ensemble.features import FeatureConfig
from ensemble.perform import FOLLOWERS
from ensemble.timbre import AUTO, check_timbre

__all__ = ["Settings", "read_clip", "check_settings"]


def read_clip(path: str | None, *, limits: Limits = Limits(), features: FeatureConfig = FeatureConfig(),
              keep_original: bool = True) -> LoadedAudio:
    """Decode an upload for a round: mono float32 at the grid's rate (16 kHz), within the length
    limits (2 s to 10 min), not silent; and the recording as uploaded (every channel, its own rate),
    which the round plays back.

    Args:
        path: the uploaded (or recorded) file; ``None`` when nothing was given.
        limits: the engine's limits (``engine.config.limits``).
        features: the engine's frame grid (its sample rate).
        keep_original: keep the recording as uploaded in ``LoadedAudio.original`` (default).

    Raises:
        EnsembleError: no file, not audio, silent, too short or too long -- the message names the
            file by its own name, not by the server's temporary path.
    """
    if path is None or not str(path).strip():
        raise EnsembleError("no clip was given: upload or record a clip (WAV, FLAC, OGG or MP3) first")
    name = Path(path).name
    if not Path(path).exists():  # e.g. refused when it was uploaded, and deleted then
        raise EnsembleError(f"{name!r} is no longer on the server (an upload that was refused is deleted "
                            "at once, and uploads expire); upload the clip again")
    try:
        return load_audio(path, sample_rate=features.sample_rate, min_seconds=limits.min_input_seconds,
                          max_seconds=limits.max_input_seconds, allow_silent=False,
                          keep_original=keep_original)
    except EnsembleError as exc:
        # load_audio names the full path; on the server that is a temporary upload folder
        raise EnsembleError(str(exc).replace(str(path), name)) from None


@dataclass(frozen=True)
class Settings:
    """What the page asks of one round (checked by :func:`check_settings`).

    Attributes:
        target_seconds: length of each candidate (input + continuation), s.
        k: number of candidates, 1..``Limits.max_k`` (10).
        alpha, beta: weights of relevance and coherence in the composite score.
        lookbacks: subset of the database's lookbacks (s) to query with; ``None`` = all.
        followers: instruments the band adds (subset of Bass, Drums, Keys).
        transpose: also try the segments shifted -6..+6 semitones.
        seed: seeds the decoders' noise.
        blind: shuffle, hide scores until submission, opaque names.
        timbre: the instrument sound of the continuations: "auto" (inferred from the clip), "guitar"
            (BabyBand's guitar decoder) or one of ``engine.timbres``.
    """

    target_seconds: float = 30.0
    k: int = 4
    alpha: float | None = None
    beta: float | None = None
    lookbacks: tuple[float, ...] | None = None
    followers: tuple[str, ...] = FOLLOWERS
    transpose: bool = False
    seed: int = 0
    blind: bool = True
    timbre: str = AUTO

    def request(self) -> ExtendRequest:
        return ExtendRequest(seconds=self.target_seconds, k=self.k, alpha=self.alpha, beta=self.beta,
                             lookbacks=self.lookbacks, transpose=self.transpose,
                             followers=self.followers, seed=self.seed, timbre=self.timbre)


def _number(name: str, value: object) -> float:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise EnsembleError(f"{name} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise EnsembleError(f"{name} must be a finite number, got {value!r}")
    return x


def _check_list(name: str, value: object) -> None:
    """A list parameter of the API must be a list (a string would be walked letter by letter)."""
    if not isinstance(value, (list, tuple)):
        raise EnsembleError(f"{name} {value!r}; allowed: a list")


def check_settings(*, target_seconds: object, k: object, alpha: object, beta: object,
                   lookbacks: Sequence[object] | None, followers: Sequence[str] | None,
                   transpose: object = False, seed: object = 0, blind: object = True,
                   timbre: object = AUTO, input_seconds: float | None = None, limits: Limits = Limits(),
                   timbres: tuple[str, ...] = (),
                   lookback_choices: Sequence[float] | None = None) -> Settings:
    """Turn the page's raw values into :class:`Settings`, or say in words what is wrong.

    Args:
        timbre: "auto", "guitar" or one of ``timbres`` (``None``: "auto", what an API client that
            leaves it out means).
        limits: the engine's limits (``engine.config.limits``).
        timbres: the engine's installed timbres (``engine.timbres``; empty: only "auto" and "guitar").
        lookback_choices: the database's lookbacks (s); ``None``: any positive number.

    Raises:
        EnsembleError: a target not longer than the input or above ``limits.max_target_seconds``, K
            outside 1..``limits.max_k``, a weight outside [0, ``limits.max_weight``], no lookback or no
            follower chosen, a lookback not among ``lookback_choices``, a follower not among
            ``FOLLOWERS``, a list given as anything but a list, a timbre that is not "auto", "guitar" or
            one of ``timbres``.
    """
    target = _number("target length", target_seconds)
    if input_seconds is not None and target <= input_seconds:
        raise EnsembleError(f"target length {target:g} s must be longer than the input "
                            f"({input_seconds:.2f} s): the candidates continue your clip")
    if not 0 < target <= limits.max_target_seconds:
        raise EnsembleError(f"target length {target:g} s; allowed: up to {limits.max_target_seconds:g} s")
    k_value = _number("K", k)
    if k_value != int(k_value) or not 1 <= k_value <= limits.max_k:
        raise EnsembleError(f"K = {k!r}; allowed: a whole number 1..{limits.max_k}")
    weights = []
    for name, value in (("alpha", alpha), ("beta", beta)):
        if value is None:
            weights.append(None)
            continue
        w = _number(name, value)
        if not 0.0 <= w <= limits.max_weight:
            raise EnsembleError(f"{name} = {w:g}; allowed: 0..{limits.max_weight:g}")
        weights.append(w)
    if lookbacks is not None:
        _check_list("lookbacks", lookbacks)
        lookbacks = tuple(_number("lookback", x) for x in lookbacks)
        if not lookbacks:
            raise EnsembleError("choose at least one lookback")
        if lookback_choices is not None:
            allowed = tuple(float(x) for x in lookback_choices)
            for x in lookbacks:
                if not any(math.isclose(x, a, abs_tol=1e-6) for a in allowed):
                    raise EnsembleError(f"lookback {x:g} s; allowed: {', '.join(f'{a:g}' for a in allowed)} s")
    if followers is not None:
        _check_list("followers", followers)
    if not followers:
        raise EnsembleError("choose at least one follower (bass, drums, keys) to play along")
    for f in followers:
        if f not in FOLLOWERS:
            raise EnsembleError(f"followers {f!r}; allowed: {', '.join(FOLLOWERS)}")
    seed_value = _number("seed", 0 if seed is None else seed)
    timbre_name = check_timbre(AUTO if timbre is None else timbre, tuple(timbres))  # the library's words
    return Settings(target_seconds=target, k=int(k_value), alpha=weights[0], beta=weights[1],
                    lookbacks=lookbacks, followers=tuple(str(f) for f in followers),
                    transpose=bool(transpose), seed=int(seed_value) & 0x7FFFFFFF, blind=bool(blind),
                    timbre=timbre_name)
