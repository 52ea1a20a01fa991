"""The engine: everything loaded once and shared by every request, with its one frozen configuration.

:class:`EngineConfig` is the single declaration of where the models and databases live, of the
request limits (:class:`Limits`: input and target lengths, K, the weights' range) and of the frame
grid (:class:`~ensemble.features.FeatureConfig`). :meth:`Engine.load` builds the engine from it and
passes the pieces down: the leader decoder (query embeddings and re-synthesis), the RAG database and
the performer (band decoders, arranger, drum database). The engine is read-only after loading;
:func:`ensemble.extend.extend` serves one request with it and the listening round
(:mod:`ensemble.listening`) checks its settings against ``engine.config.limits``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ensemble.audio import DEFAULT_MAX_SECONDS
from ensemble.config import config_from_dict, config_to_dict
from ensemble.conform import ContinuityConfig
from ensemble.errors import EnsembleError
from ensemble.features import FeatureConfig
from ensemble.models.decoder import GRU_WEIGHTS, InstrumentDecoder, enable_fast_cpu_inference, for_rendering
from ensemble.models.io import decoder_file, load_decoder
from ensemble.perform import PerformConfig, Performer
from ensemble.rag import HAND_SET, RagDatabase
from ensemble.ratings.fit import RANKABLE, load_weights
from ensemble.timbre import TimbreConfig

__all__ = ["Limits", "EngineConfig", "Engine", "BAD_WEIGHTS"]

BAD_WEIGHTS = ("raise", "hand-set")  # what Engine.load does with a weights file it cannot use
log = logging.getLogger("ensemble.engine")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; every entry point checks against these.

    Attributes:
        min_input_seconds: the shortest clip (the query and the performer both need 2 s).
        max_input_seconds: the longest clip.
        max_target_seconds: the longest candidate (input + continuation).
        max_k: the most candidates per request.
        max_weight: alpha and beta lie in [0, max_weight].
    """

    min_input_seconds: float = 2.0
    max_input_seconds: float = DEFAULT_MAX_SECONDS
    max_target_seconds: float = DEFAULT_MAX_SECONDS
    max_k: int = 10
    max_weight: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.min_input_seconds < self.max_input_seconds <= DEFAULT_MAX_SECONDS:
            raise EnsembleError(f"input limits {self.min_input_seconds:g}..{self.max_input_seconds:g} s; "
                                f"allowed: 0 < min < max <= {DEFAULT_MAX_SECONDS:g} s")
        if not 0 < self.max_target_seconds <= DEFAULT_MAX_SECONDS:
            raise EnsembleError(f"max_target_seconds {self.max_target_seconds:g}; allowed: "
                                f"0 < max <= {DEFAULT_MAX_SECONDS:g} s")
        if self.max_k < 1 or self.max_weight <= 0:
            raise EnsembleError(f"max_k {self.max_k} must be >= 1 and max_weight {self.max_weight:g} > 0")


@dataclass(frozen=True)
class EngineConfig:
    """Where the engine's files are and what it allows.

    Attributes:
        checkpoints_dir: ``decoder_{leader,Bass,Keys}.pt`` and ``arranger.pt``.
        database_dir: the RAG database (``python -m ensemble index build``).
        drums_dir: the drum database and learned harmony model (``python -m ensemble drums build``).
        leader: the instrument whose decoder embeds the query (the database was embedded with it).
        timbre_leader: the conditioned decoder that renders continuations in the user's timbre
            (``decoder_<timbre_leader>.pt``; :mod:`ensemble.timbre`). Without that file the
            ``leader`` decoder renders them (BabyBand's guitar), with a note.
        timbre: how the user's timbre is inferred and the switch into the rendering hidden.
        continuity: how a pool of candidates is narrowed to the K that go on playing as the
            input does (:class:`ensemble.conform.ContinuityConfig`).
        features: the frame grid of every model and database (16 kHz, hop 160 = 100 frames/s).
        limits: what a request may ask for.
        gru_weights: how the decoders that render (leader, Bass, Keys) store their GRU's weights:
            "float16" (1.6-2x faster, 90 dB SNR to float32;
            :func:`ensemble.models.decoder.for_rendering`) or "float32". The query's embedding
            always uses the float32 leader, as the database did.
        weights: a weights file fitted to listeners' rankings (``python -m ensemble ratings fit``;
            :mod:`ensemble.ratings.fit`) that ranks the candidates instead of the hand-set composite;
            None (the default): the composite ranks (alpha, beta). The app reads it from
            ``ENSEMBLE_WEIGHTS``, ``extend`` from ``--weights``.
    """

    checkpoints_dir: str = "checkpoints"
    database_dir: str = "assets/rag"
    drums_dir: str = "assets/drums"
    leader: str = "Guitar"
    timbre_leader: str = "Leader"
    timbre: TimbreConfig = field(default_factory=TimbreConfig)
    continuity: ContinuityConfig = field(default_factory=ContinuityConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    limits: Limits = field(default_factory=Limits)
    gru_weights: str = "float16"
    weights: str | None = None

    def __post_init__(self) -> None:
        if self.gru_weights not in GRU_WEIGHTS:
            raise EnsembleError(f"gru_weights {self.gru_weights!r}; allowed: {', '.join(GRU_WEIGHTS)}")

    @property
    def leader_checkpoint(self) -> Path:
        return Path(self.checkpoints_dir) / decoder_file(self.leader)

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EngineConfig:
        """From a JSON dict (unknown keys refused, nested ``features``/``limits`` as dicts)."""
        return config_from_dict(cls, d)


@dataclass
class Engine:
    """Models and database, loaded once and shared by all requests (read-only after load)."""

    leader: InstrumentDecoder
    db: RagDatabase
    performer: Performer
    config: EngineConfig = field(default_factory=EngineConfig)
    versions: dict = field(default_factory=dict)
    renderer: InstrumentDecoder | None = None  # the leader as it renders (for_rendering); None: leader
    timbre_renderer: InstrumentDecoder | None = None  # the conditioned decoder (for_rendering), if installed
    weights_note: str = ""  # why a configured weights file is not ranking (Engine.load(bad_weights="hand-set"))

    @property
    def weights(self) -> str:
        """Which weights rank the candidates: ``"hand-set"`` or the fitted file's version (``"pl-..."``)."""
        return HAND_SET if self.db.utility is None else str(self.db.utility.version)

    @property
    def timbres(self) -> tuple[str, ...]:
        """The timbres a request may name besides "auto" and "guitar" (empty: none installed)."""
        return self.timbre_renderer.config.timbres if self.timbre_renderer is not None else ()

    @property
    def leader_renderer(self) -> InstrumentDecoder:
        """The decoder that renders the leader's continuations."""
        return self.leader if self.renderer is None else self.renderer

    @classmethod
    def load(cls, config: EngineConfig = EngineConfig(), *, bad_weights: str = "raise") -> Engine:
        """Load the shipped checkpoints and databases named by ``config``.

        Args:
            bad_weights: what a configured weights file that is missing, corrupt or fitted on
                sub-scores retrieval cannot compute does: "raise" (the library and CLI), or
                "hand-set" (the app: keep serving with the hand-set composite; the reason is logged
                and kept in ``weights_note``).

        Raises:
            EnsembleError: a missing or damaged file, naming it.
        """
        if bad_weights not in BAD_WEIGHTS:
            raise EnsembleError(f"bad_weights {bad_weights!r}; allowed: {', '.join(BAD_WEIGHTS)}")
        weights, weights_note = None, ""
        if config.weights:  # checked first: a bad file fails fast, before the models load
            try:
                weights = load_weights(config.weights, available=RANKABLE)
            except EnsembleError as exc:
                if bad_weights == "raise":
                    raise
                weights_note = str(exc)
                log.warning("the configured weights are not used, ranking with the hand-set weights: %s", exc)
        enable_fast_cpu_inference()  # denormal activations make the GRUs ~10x slower on CPU
        leader, meta = load_decoder(config.leader_checkpoint)
        db = RagDatabase.load(config.database_dir, features=config.features)
        performer = Performer.load(PerformConfig(checkpoints_dir=str(config.checkpoints_dir),
                                                 drum_db=str(config.drums_dir),
                                                 max_seconds=config.limits.max_target_seconds,
                                                 gru_weights=config.gru_weights),
                                   features=config.features)
        versions = {"guitar_decoder_steps": meta.get("steps"), "database": db.version,
                    "performer": performer.versions}
        timbre_path = Path(config.checkpoints_dir) / decoder_file(config.timbre_leader)
        timbre_renderer = None
        if timbre_path.is_file():
            timbre_dec, timbre_meta = load_decoder(timbre_path)
            if not timbre_dec.config.timbres:
                raise EnsembleError(f"{str(timbre_path)!r} is not conditioned on timbres; allowed: a decoder "
                                    "trained with `python -m ensemble train decoder --timbres ...`")
            timbre_renderer = for_rendering(timbre_dec, config.gru_weights)
            try:
                sha = json.loads(timbre_path.with_suffix(".json").read_text()).get("sha256")
            except (OSError, ValueError):
                sha = None
            versions["timbre_decoder"] = {"file": timbre_path.name, "sha256": sha, "steps": timbre_meta.get("steps"),
                                          "timbres": list(timbre_dec.config.timbres)}
        db.utility = weights  # None: the hand-set composite ranks (ensemble.rag)
        versions["weights"] = HAND_SET if weights is None else weights.version
        return cls(leader, db, performer, config, versions, for_rendering(leader, config.gru_weights),
                   timbre_renderer, weights_note)

    @property
    def model_version(self) -> str:
        """Short id of the shipped models: sha256 prefixes of the checkpoints."""
        v = self.performer.versions
        parts = [str(v.get(k, {}).get("sha256") or "")[:8] for k in ("arranger", "Bass", "Keys")]
        parts.append(str(self.versions.get("timbre_decoder", {}).get("sha256") or "")[:8])
        return "-".join(p for p in parts if p) or "in-memory"

    @property
    def sample_rate(self) -> int:
        return self.config.features.sample_rate

