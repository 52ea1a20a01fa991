"""The exact stage of IVF retrieval, compiled: which fetched chunks can pass the strict pass, and an
upper bound of their composite (:mod:`ensemble.rag_index` explains why the bound is sound).

At a million chunks a query fetches ~45k chunks; the filters, the alignment to the input's beat grid
and the bound are some forty short NumPy passes over them, each too short for its arithmetic to
outweigh the interpreter (measured: ~19 ms of a ~30 ms query). Here they are one pass per chunk
(numba, compiled on first use and cached beside this file):

- :func:`possible_members`: the chunks of the fetched groups where some chunk can be in key and
  within the dynamics tolerance (a member's key fit is at most its group mean's plus the group's radius);
- :func:`bound_chunks`: per chunk, the key filter (key fit, key margin, key floor, dynamics), then
  -- for those that pass at some shift -- the stretch, the aligned start, whether it is playable and
  the register of its window (the same IEEE operations in the same order as
  :func:`ensemble.rag.aligned_starts`, :func:`ensemble.rag._playable` and
  :func:`ensemble.rag.window_pitch`: tested equal to the bit), then the coherence bound per passing
  shift and, where it reaches the floor, the exact relevance (max over the masked lookbacks).

The relevance is summed in float64 from the float32 vectors; the exact scores are float32 products
(BLAS, any summation order), within ``gamma_n * sum |x_i y_i|`` of the true value (gamma_88 ~ 5.2e-6),
so each pair's slack is ``1e-5 * alpha`` times a Cauchy-Schwarz bound of that sum (the largest vector
norms of the database times the query row's norm) -- the bound stays a bound.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["MODES", "possible_members", "bound_chunks"]

MODES = {"join": 0, "approach": 1, "either": 2}  # RagConfig.seam_match / loudness_match as the kernel reads them
_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@numba.njit(**_JIT)
def _penalty(join: float, approach: float, mode: int) -> float:
    """|difference| per the seam mode (ensemble.rag._penalties; NaN where no side has evidence)."""
    if mode == 0:
        return abs(join)
    if mode == 1:
        return abs(approach)
    j, a = abs(join), abs(approach)
    if math.isnan(j):
        return a
    if math.isnan(a):
        return j
    return min(j, a)


@numba.njit(**_JIT)
def _closeness(x: float, rate: float) -> float:
    """exp(-rate * |x|), 0.5 where x is NaN (ensemble.rag._closeness with rate = ln 2 / half-life / 100)."""
    if math.isnan(x):
        return 0.5
    return math.exp(-rate * abs(x))


@numba.njit(**_JIT)
def _circular(cents: float) -> float:
    """|cents| folded to the nearest octave (what no whole-octave shift goes below; NaN kept)."""
    return abs(cents - 1200.0 * np.rint(cents / 1200.0))


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _dot(x, y) -> float:
    """sum x_i y_i in float64 of two float32 vectors (reassociated: vectorised; exact products)."""
    s = 0.0
    for i in range(len(x)):
        s += np.float64(x[i]) * np.float64(y[i])
    return s


@numba.njit(**_JIT)
def possible_members(groups, starts, group_profile, group_radius, group_dynamics, rolled, key_floor,
                     q_dynamics, tolerance_db):
    """Chunks of the groups ``groups`` (ascending) of which some chunk can pass the key floor and the
    dynamics filter, and per chunk the key shifts at which it can.

    A member's key fit at shift t is at most the group mean's plus the group's radius (the query's
    rolled profile is unit), so a shift where that is below the floor is out for every member; the
    key margin is unaffected (a shift below the floor never holds a chunk's best fit while another
    shift passes the floor).

    Args:
        groups: [n_g] int64 ascending group ids; starts: [n_groups + 1] their first chunks.
        group_profile: [n_groups, 12] mean centred unit profile; group_radius: [n_groups];
        group_dynamics: [n_groups, 2] min and max dynamics (dB).
        rolled: [n_t, 12] the query's centred unit profile rolled per key shift (zeros: no key); n_t <= 63.
        q_dynamics: the query's dynamics (dB; NaN: no filter).

    Returns:
        ([n] int64 chunk ids ascending, [n] int64 bit t set where shift t can pass, chunks fetched).
    """
    fetched = 0
    for g in groups:
        fetched += starts[g + 1] - starts[g]
    out = np.empty(fetched, np.int64)
    shifts = np.empty(fetched, np.int64)
    n = 0
    dyn = not math.isnan(q_dynamics)
    for g in groups:
        if dyn and (group_dynamics[g, 1] < q_dynamics - tolerance_db
                    or group_dynamics[g, 0] > q_dynamics + tolerance_db):
            continue
        mask = 0
        for t in range(rolled.shape[0]):
            s = 0.0
            for i in range(12):
                s += group_profile[g, i] * rolled[t, i]
            if s + group_radius[g] >= key_floor - 1e-5:
                mask |= 1 << t
        if mask == 0:
            continue
        for c in range(starts[g], starts[g + 1]):
            out[n] = c
            shifts[n] = mask
            n += 1
    return out[:n], shifts[:n], fetched


@numba.njit(**_JIT)
def bound_chunks(idx, shifts, given, stretch_in, start_in, register_in, conform, cont_frames,
                 # the database's arrays
                 profiles, dynamics, chunk_track, chunk_start, track_offsets, track_tempo, track_stretch,
                 cum_voiced, cum_cents, cum_loud, level, seg, ctx, fps, seam, tail,
                 # the query
                 rolled, transposes, Q, shared, lookbacks, rel_slack, q_dynamics, q_tempo, q_beat_s, q_phase_s,
                 q_seam_pitch, q_seam_loud, q_register,
                 # the configuration
                 key_margin, key_floor, tolerance_db, floor, pitch_rate, register_rate, loud_rate, tempo_rate,
                 pitch_mode, loud_mode, alpha, beta):
    """Per chunk of ``idx``: (bound, stretch, aligned start frame, register); bound -inf where the
    chunk cannot pass the strict pass (out of key at every shift, outside the dynamics tolerance,
    not playable, coherence bound below the floor).

    Args:
        shifts: [n] int64 bit t set where shift t can pass the key floor (:func:`possible_members`;
            -1: every shift).
        given: read stretch / start / register from ``*_in`` ([n]) instead of computing them.
        conform: stretch to the query's tempo and align to its beat grid (else stretch 1, stored start).
        profiles: [N, 12] float32 centred unit pitch-class profiles; track_stretch: [n_tracks]
            (ensemble.rag.track_stretch); seam, tail: frames of the seam and of the voiced tail.
        rolled: [n_t, 12] float64; transposes: [n_t] semitones; Q: [L, n_t, 2d] float32
            (ensemble.rag._query_matrix); shared: its leading columns of each half that are the same
            at every shift (the embedding's: only the chroma columns are rolled); lookbacks: masked
            lookback indices; rel_slack: [n_t] the relevance slack per shift.
        *_rate: ln 2 / half-life (pitch and register per cent, loudness per dB, tempo per octave).
    """
    n, n_t, d = len(idx), len(transposes), seg.shape[1]
    bound = np.full(n, -np.inf)
    stretch_out = np.ones(n)
    start_out = np.zeros(n)
    register_out = np.full(n, np.nan)
    kf = np.empty(n_t)
    base = np.empty(len(lookbacks))
    have_key = False
    for t in range(n_t):
        for i in range(12):
            have_key = have_key or rolled[t, i] != 0.0
    if not have_key:  # no key: every key fit is 0, below the floor
        return bound, stretch_out, start_out, register_out
    dyn = not math.isnan(q_dynamics)
    beat_known = not math.isnan(q_beat_s) and not math.isinf(q_beat_s)
    tempo_known = not math.isnan(q_tempo) and not math.isinf(q_tempo)
    for j in range(n):
        c = idx[j]
        # the key filter (ensemble.rag_index docstring; 1e-6 of slack: another summation order)
        if dyn and not abs(np.float64(dynamics[c]) - q_dynamics) <= tolerance_db:
            continue
        # the fit at the shifts that can pass (possible_members); elsewhere below the floor
        best = -np.inf
        for t in range(n_t):
            if shifts[j] >> t & 1:
                s = 0.0
                for i in range(12):
                    s += np.float64(profiles[c, i]) * rolled[t, i]
                kf[t] = s
                best = max(best, s)
            else:
                kf[t] = -np.inf
        any_ok = False
        for t in range(n_t):
            if kf[t] >= best - key_margin - 1e-6 and kf[t] >= key_floor - 1e-6:
                any_ok = True
        if not any_ok:
            continue
        tr = chunk_track[c]
        line0, line1 = track_offsets[tr], track_offsets[tr + 1]
        # stretch and aligned start: ensemble.rag._stretch and aligned_starts, operation for operation
        if given:
            st, s_fr = stretch_in[j], start_in[j]
        elif conform:
            st = track_stretch[tr]
            tempo = track_tempo[tr]
            start = np.float64(chunk_start[c]) / fps
            if not math.isnan(tempo) and not math.isinf(tempo) and tempo > 0 and beat_known:
                period = q_beat_s / st
                want = np.mod(-q_phase_s / st, period)
                s = start + (np.mod(want - start + period / 2, period) - period / 2)
                if s < 0:
                    s = s + period
                line = (line1 - line0) / fps
                over = max(s + cont_frames / fps / st - line, 0.0)
                s = s - period * np.ceil(over / period)
                s_fr = max(s, 0.0) * fps
            else:
                s_fr = start * fps
        else:
            st, s_fr = 1.0, np.float64(chunk_start[c])
        stretch_out[j], start_out[j] = st, s_fr
        need = np.int64(np.ceil(cont_frames / st))
        rounded = np.int64(np.rint(s_fr))
        # playable (ensemble.rag._playable): the frames it needs, voiced near the window's end
        end = line0 + rounded + need
        if end > line1:
            continue
        if cum_voiced[end] - cum_voiced[max(end - tail, 0)] <= 0:
            continue
        a = min(line0 + rounded, line1 - 1)
        if given:
            reg = register_in[j]
        else:  # ensemble.rag.window_pitch
            b = min(a + need, line1)
            nv = cum_voiced[b] - cum_voiced[a]
            reg = (cum_cents[b] - cum_cents[a]) / max(nv, 1) if nv > 0 else np.nan
        register_out[j] = reg
        # the seam's entry and approach (ensemble.rag._entry)
        lv = np.float64(level[c])
        hi = min(a + seam, line1)
        nv = cum_voiced[hi] - cum_voiced[a]
        e_pitch = (cum_cents[hi] - cum_cents[a]) / max(nv, 1) if nv > 0 else np.nan
        e_loud = ((cum_loud[hi] - cum_loud[a]) / max(hi - a, 1) if hi > a else np.nan) - lv
        lo = max(a - seam, line0)
        nv = cum_voiced[a] - cum_voiced[lo]
        a_pitch = (cum_cents[a] - cum_cents[lo]) / max(nv, 1) if nv > 0 else np.nan
        a_loud = ((cum_loud[a] - cum_loud[lo]) / max(a - lo, 1) if a > lo else np.nan) - lv
        # the coherence terms that do not depend on the shift
        l_term = _closeness(_penalty(e_loud - q_seam_loud, a_loud - q_seam_loud, loud_mode), loud_rate)
        t_term = 0.5
        if tempo_known and not math.isnan(track_tempo[tr]) and not math.isinf(track_tempo[tr]):
            t_term = math.exp(-tempo_rate * abs(math.log2(st)))
        top = -np.inf
        have_base = False
        for t in range(n_t):
            if not (kf[t] >= best - key_margin - 1e-6 and kf[t] >= key_floor - 1e-6):
                continue
            k_term = min(max(kf[t] + 1e-6, 0.0), 1.0)
            # the pitch and register terms are at most 1: cheap exits before their exponentials
            if (l_term + t_term + k_term + 2.0) / 5.0 < floor - 1e-9:
                continue
            shift = 100.0 * transposes[t]
            p_term = _closeness(_penalty(_circular(e_pitch + shift - q_seam_pitch),
                                         _circular(a_pitch + shift - q_seam_pitch), pitch_mode), pitch_rate)
            if (p_term + l_term + t_term + k_term + 1.0) / 5.0 < floor - 1e-9:
                continue
            r_term = _closeness(_circular(reg + shift - q_register), register_rate)
            coh = (p_term + l_term + t_term + k_term + r_term) / 5.0
            if coh < floor - 1e-9:
                continue
            if not have_base:  # the columns no key shift changes, once per chunk and lookback
                for m in range(len(lookbacks)):
                    li = lookbacks[m]
                    base[m] = _dot(ctx[li, c, :shared], Q[li, 0, :shared]) \
                        + _dot(seg[c, :shared], Q[li, 0, d:d + shared])
                have_base = True
            rel = -np.inf
            for m in range(len(lookbacks)):
                li = lookbacks[m]
                rel = max(rel, base[m] + _dot(ctx[li, c, shared:], Q[li, t, shared:d])
                          + _dot(seg[c, shared:], Q[li, t, d + shared:]))
            top = max(top, alpha * rel + beta * coh + 1e-6 + alpha * rel_slack[t])
        bound[j] = top
    return bound, stretch_out, start_out, register_out
