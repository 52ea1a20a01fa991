"""Settings of the performer: one frozen dataclass passed to :class:`~ensemble.perform.Performer`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ensemble.audio import DEFAULT_MAX_SECONDS
from ensemble.config import config_from_dict
from ensemble.errors import EnsembleError
from ensemble.models.decoder import GRU_WEIGHTS

__all__ = ["FOLLOWERS", "HARMONY_UNITS", "PerformConfig", "parse_followers"]

FOLLOWERS = ("Bass", "Drums", "Keys")
HARMONY_UNITS = ("beat", "half_bar", "bar")
HARMONY_MODELS = ("auto", "rules", "learned")


def parse_followers(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """"bass,drums,keys" (any case, any order) -> ("Bass", "Drums", "Keys") in canonical order.

    Raises:
        EnsembleError: an unknown name, or none at all.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [str(x).strip() for x in items if str(x).strip()]
    lookup = {f.lower(): f for f in FOLLOWERS}
    bad = [n for n in names if n.lower() not in lookup]
    if bad or not names:
        raise EnsembleError(f"followers {names or text!r}: allowed a non-empty subset of "
                            f"{', '.join(f.lower() for f in FOLLOWERS)}")
    chosen = {lookup[n.lower()] for n in names}
    return tuple(f for f in FOLLOWERS if f in chosen)


@dataclass(frozen=True)
class PerformConfig:
    """How a leader clip is turned into a band arrangement.

    Attributes:
        followers: instruments added to the leader, a subset of ("Bass", "Drums", "Keys").
        checkpoints_dir: folder with decoder_Bass.pt, decoder_Keys.pt, arranger.pt (+ .json).
        drum_db: folder of the drum database (and learned harmony model), see
            :mod:`ensemble.perform.drums`.
        seed: seeds the decoders' noise and, with ``drum_variety > 1``, the drum loop choice.
        leader_gain_db, bass_gain_db, drums_gain_db, keys_gain_db: per-stem mix gains, dB.
        bass_low_midi, bass_high_midi: bass range, MIDI (28..45 = E1..A2 = 41.2..110 Hz).
        keys_low_midi, keys_high_midi: keys voicing range, MIDI (48..72 = C3..C5).
        harmony_unit: a chord per "beat", "half_bar" or "bar" (bars from the chosen drum loop's
            meter and phase; "beat" when there is no drum choice).
        harmony_model: "auto" (the learned model shipped with the drum database when there is
            one, else the rules), "rules" or "learned".
        f0_weight: share of the leader's f0 pitch class in its pitch evidence (the rest: chroma).
        key_final_bonus: correlation bonus for keys whose tonic is the leader's last note (tunes
            end on their tonic); 0 turns it off, e.g. for excerpts cut mid-phrase.
        activity_db: leader loudness (dB, A-weighted) above which a frame counts as active.
        min_voiced_fraction: below this share of voiced frames among active ones the leader is
            unpitched: no bass or keys, a note in perform.json.
        default_tempo_bpm: tempo of the fallback beat grid (silent leader, or too few beats).
        min_beats: fewer tracked beats than this -> the fallback grid.
        min_seconds, max_seconds: accepted clip length.
        drum_variety: the seed picks among this many best drum choices (1 = always the best).
        drum_max_stretch: loops whose tempo is further than this fraction from the grid's are
            not used.
        drum_level_db: drum loudness (dB) when the leader is silent and the arranger has nothing
            to follow.
        bass_note_gap_s: loudness dip before each new bass note (re-articulation).
        limiter_threshold_db, limiter_ceiling_db: soft limiter on the mix (ceiling < 0 dBFS).
        analysis_chunk_seconds: the leader is analysed in chunks of this length (bounds memory).
        render_chunk_seconds: the keys voices are rendered one at a time above this length to bound
            memory (a 10-minute clip).
        gru_weights: "float16" (the Bass and Keys decoders render with float16 GRU weights:
            1.6-2x faster, 90 dB SNR to float32; :func:`ensemble.models.decoder.for_rendering`) or
            "float32".
    """

    followers: tuple[str, ...] = FOLLOWERS
    checkpoints_dir: str = "checkpoints"
    drum_db: str = "assets/drums"
    seed: int = 0
    leader_gain_db: float = 0.0
    bass_gain_db: float = 0.0
    drums_gain_db: float = 0.0
    keys_gain_db: float = 0.0
    bass_low_midi: int = 28
    bass_high_midi: int = 45
    keys_low_midi: int = 48
    keys_high_midi: int = 72
    harmony_unit: str = "beat"
    harmony_model: str = "auto"
    f0_weight: float = 0.7
    key_final_bonus: float = 0.2
    activity_db: float = -50.0
    min_voiced_fraction: float = 0.05
    default_tempo_bpm: float = 100.0
    min_beats: int = 4
    min_seconds: float = 2.0
    max_seconds: float = DEFAULT_MAX_SECONDS  # the one 10-minute limit (ensemble.audio)
    drum_variety: int = 1
    drum_max_stretch: float = 0.25
    drum_level_db: float = -24.0
    bass_note_gap_s: float = 0.03
    limiter_threshold_db: float = -6.0
    limiter_ceiling_db: float = -1.0
    analysis_chunk_seconds: float = 30.0
    render_chunk_seconds: float = 120.0
    gru_weights: str = "float16"

    def __post_init__(self) -> None:
        object.__setattr__(self, "followers", parse_followers(self.followers))
        if self.harmony_unit not in HARMONY_UNITS:
            raise EnsembleError(f"harmony_unit {self.harmony_unit!r}; allowed: {HARMONY_UNITS}")
        if self.harmony_model not in HARMONY_MODELS:
            raise EnsembleError(f"harmony_model {self.harmony_model!r}; allowed: {HARMONY_MODELS}")
        if self.bass_high_midi - self.bass_low_midi < 11 or self.bass_low_midi < 0:
            raise EnsembleError(f"bass range {self.bass_low_midi}..{self.bass_high_midi} MIDI must "
                                "span at least 12 semitones")
        if self.keys_high_midi - self.keys_low_midi < 16 or self.keys_low_midi < 0:
            raise EnsembleError(f"keys range {self.keys_low_midi}..{self.keys_high_midi} MIDI must "
                                "span at least 17 semitones")
        if not 0.5 <= self.min_seconds < self.max_seconds:
            raise EnsembleError(f"need 0.5 <= min_seconds < max_seconds, got {self.min_seconds}, "
                                f"{self.max_seconds}")
        if not 0.0 <= self.f0_weight <= 1.0:
            raise EnsembleError(f"f0_weight {self.f0_weight} must be in [0, 1]")
        if not self.limiter_threshold_db < self.limiter_ceiling_db < 0.0:
            raise EnsembleError(f"need limiter threshold < ceiling < 0 dBFS, got "
                                f"{self.limiter_threshold_db}, {self.limiter_ceiling_db}")
        if self.gru_weights not in GRU_WEIGHTS:
            raise EnsembleError(f"gru_weights {self.gru_weights!r}; allowed: {', '.join(GRU_WEIGHTS)}")
        if self.drum_variety < 1 or self.min_beats < 2:
            raise EnsembleError(f"drum_variety ({self.drum_variety}) must be >= 1 and min_beats "
                                f"({self.min_beats}) >= 2")

    def gain_db(self, stem: str) -> float:
        """The mix gain of "Leader", "Bass", "Drums" or "Keys"."""
        return float(getattr(self, f"{stem.lower()}_gain_db"))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["followers"] = list(self.followers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PerformConfig:
        """From a saved ``perform.json`` ``config`` (unknown keys refused)."""
        return config_from_dict(cls, d)
