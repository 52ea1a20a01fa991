"""Differentiable DSP: additive harmonic synthesis, filtered noise, crossfades and a soft limiter.

Everything here is a pure torch function (gradients flow to every control) or a small synth object
that separates *controls* from *signal*, as in DDSP: ``get_controls`` turns raw network outputs into
physical controls (scaling, Nyquist mask, normalisation) and ``get_signal`` renders audio.

Shapes and units (one vocabulary throughout)::

    f0_hz:                 [B, T, 1]  Hz at frame rate (0 = unvoiced)
    amplitude:             [B, T, 1]  linear overall amplitude of the harmonic part
    harmonic_distribution: [B, T, K]  relative amplitude of harmonics 1..K (sums to 1 after controls)
    noise_magnitudes:      [B, T, M]  linear magnitude response sampled at M frequencies 0..Nyquist
    audio:                 [B, N]     samples at ``sample_rate``

Frame ``t`` sits at sample ``t * hop_length`` (the ``center=True`` convention librosa uses), and
controls are linearly interpolated between frames, so the default render length is ``T * hop``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ensemble.errors import EnsembleError

__all__ = [
    "exp_sigmoid",
    "upsample_frames",
    "accumulate_phase",
    "remove_above_nyquist",
    "harmonic_synthesis",
    "naive_harmonic_synthesis",
    "impulse_response_from_magnitudes",
    "filtered_noise",
    "HarmonicSynth",
    "FilteredNoiseSynth",
    "fade_curves",
    "crossfade",
    "soft_limit",
]

TWO_PI = 2.0 * math.pi


def exp_sigmoid(x: torch.Tensor, exponent: float = 10.0, max_value: float = 2.0,
                threshold: float = 1e-7) -> torch.Tensor:
    """DDSP's scaled sigmoid for positive controls: ``max * sigmoid(x) ** log(exponent) + thr``."""
    return max_value * torch.sigmoid(x) ** math.log(exponent) + threshold


def _check_frames(name: str, x: torch.Tensor, last: int | None = None) -> None:
    if x.ndim != 3 or (last is not None and x.shape[-1] != last):
        want = f"[B, T, {last}]" if last is not None else "[B, T, C]"
        raise EnsembleError(f"{name} must have shape {want}, got {tuple(x.shape)}")


def upsample_frames(x: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Linearly interpolate frame-rate controls to audio rate.

    Args:
        x: [B, T, C] values at frames; frame ``t`` is at sample ``t * hop_length``.
        hop_length: samples per frame.

    Returns:
        [B, T * hop_length, C]; after the last frame the value is held.
    """
    _check_frames("controls", x)
    nxt = torch.cat([x[:, 1:], x[:, -1:]], dim=1)  # [B, T, C]
    w = torch.arange(hop_length, dtype=x.dtype, device=x.device) / hop_length  # [hop]
    w = w[None, None, :, None]
    up = x[:, :, None, :] * (1.0 - w) + nxt[:, :, None, :] * w  # [B, T, hop, C]
    return up.reshape(x.shape[0], -1, x.shape[2])


def accumulate_phase(f0_hz: torch.Tensor, *, sample_rate: int, hop_length: int) -> torch.Tensor:
    """Instantaneous phase of the fundamental at audio rate, wrapped to [0, 2*pi).

    The running sum is done in float64 and wrapped before casting back, so a 10-minute render keeps
    sub-microradian phase accuracy instead of drifting as a float32 cumsum would.

    Args:
        f0_hz: [B, T, 1] Hz (negative or NaN treated as 0).

    Returns:
        [B, T * hop_length] radians in the dtype of ``f0_hz``; sample 0 has phase 0.
    """
    f0 = torch.nan_to_num(f0_hz, nan=0.0).clamp_min(0.0).to(torch.float64)
    omega = upsample_frames(f0, hop_length)[..., 0] * (TWO_PI / sample_rate)  # [B, N]
    phase = torch.cumsum(omega, dim=1) - omega  # exclusive sum: phase[0] = 0
    return torch.remainder(phase, TWO_PI).to(f0_hz.dtype)


def remove_above_nyquist(harmonic_distribution: torch.Tensor, f0_hz: torch.Tensor, *,
                         sample_rate: int, taper_hz: float = 500.0) -> torch.Tensor:
    """Zero every harmonic whose frequency reaches Nyquist, and all harmonics of unvoiced frames.

    Because controls are interpolated between frames, a harmonic is kept at frame t only if it is
    below Nyquist at frames t-1, t and t+1: then no interpolated segment it sounds in ever crosses
    Nyquist, so nothing aliases. Harmonics within ``taper_hz`` of Nyquist are faded linearly
    (gain 0 at Nyquist, 1 at ``taper_hz`` below), so a glide does not switch a harmonic off
    abruptly: an abrupt switch spreads sidebands across Nyquist.

    Args:
        harmonic_distribution: [B, T, K].
        f0_hz: [B, T, 1] Hz; frames with f0 <= 0 or NaN are silenced.

    Returns:
        [B, T, K] with masked entries set to exactly 0.
    """
    _check_frames("harmonic_distribution", harmonic_distribution)
    _check_frames("f0_hz", f0_hz, 1)
    f0 = torch.nan_to_num(f0_hz, nan=0.0)
    neighbour_max = F.max_pool1d(f0.transpose(1, 2), 3, stride=1, padding=1).transpose(1, 2)
    k = torch.arange(1, harmonic_distribution.shape[-1] + 1, device=f0.device, dtype=f0.dtype)
    headroom = sample_rate / 2.0 - neighbour_max * k  # Hz below Nyquist, [B, T, K]
    gain = torch.clamp(headroom / taper_hz, 0.0, 1.0) if taper_hz > 0 else (headroom > 0).to(f0.dtype)
    gain = gain * (f0 > 0)
    return harmonic_distribution * gain.to(harmonic_distribution.dtype)


def _active_harmonics(amps: torch.Tensor) -> int:
    """Highest harmonic number with a non-zero amplitude anywhere in ``amps`` [B, T, K]."""
    nz = torch.nonzero(amps.detach().abs().amax(dim=(0, 1)) > 0)
    return int(nz.max()) + 1 if nz.numel() else 0


def _powers(z: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """[z**0, ..., z**(n-1)] stacked along ``dim``, by repeated products.

    Without autograd the powers are written in place into one buffer (no stacking copy); autograd
    cannot record ``out=`` writes, so with gradients they are stacked.
    """
    if torch.is_grad_enabled() and z.requires_grad:
        powers = [torch.ones_like(z)]
        for _ in range(1, n):
            powers.append(powers[-1] * z)
        return torch.stack(powers, dim=dim)
    shape = list(z.shape)
    shape.insert(dim, n)
    out = z.new_empty(shape)
    out.select(dim, 0).fill_(1.0)
    for i in range(1, n):
        torch.mul(out.select(dim, i - 1), z, out=out.select(dim, i))
    return out


def _synth_block(z: torch.Tensor, amps: torch.Tensor, amps_next: torch.Tensor,
                 hop_length: int) -> torch.Tensor:
    """Render sum_k a_k(n) sin(k * phase(n)) for one block of frames.

    The harmonic number is split as k = m*a + b (0 <= b < m), so the complex phasor is
    z**k = z**(m*a) * z**b. Powers come from repeated complex products (one ``sin``/``cos`` per
    sample instead of one per harmonic; float32 error grows ~k * 1e-7, far below audibility),
    and the sum over b is a batched matrix product with the frame's amplitudes. Amplitudes are
    linear in time within a frame, so two matrix products (frame start and end) and a per-sample
    blend give exactly the linearly interpolated result.

    Args:
        z: [B, F, hop] complex phasor exp(i * phase) of the fundamental.
        amps, amps_next: [B, F, K] amplitudes at each frame and at the next frame.

    Returns:
        [B, F, hop] audio.
    """
    B, n_frames, K = amps.shape
    m = max(1, math.ceil(math.sqrt(K + 1)))
    n_a = math.ceil((K + 1) / m)

    P = _powers(z, m, dim=2)  # [B, F, m, hop]  z**b, b = 0..m-1
    zm = P[:, :, m - 1] * z  # z**m

    def arrange(a: torch.Tensor) -> torch.Tensor:
        # harmonic k -> index k (index 0 = DC, always 0), padded to n_a*m, then [.., b, a]
        full = F.pad(a, (1, n_a * m - K - 1))  # [B, F, n_a*m]
        return full.reshape(B, n_frames, n_a, m).transpose(2, 3)  # [B, F, m, n_a]

    # amplitudes as [B, F, 2*n_a, m]: rows a (frame start, then frame end), columns b
    A = torch.cat([arrange(amps), arrange(amps_next)], dim=-1).transpose(2, 3)
    # Interleaved re/im of P is a real [m, 2*hop] matrix, so one real matmul gives the complex
    # partial sums R[a] = sum_b A[a, b] z**b for both frame ends, with no copies.
    R = torch.matmul(A, torch.view_as_real(P).reshape(B, n_frames, m, 2 * hop_length))
    R = torch.view_as_complex(R.reshape(B, n_frames, 2 * n_a, hop_length, 2))  # [B,F,2n_a,hop]
    w = torch.arange(hop_length, dtype=amps.dtype, device=amps.device) / hop_length  # [hop]
    U = R[:, :, :n_a] + (R[:, :, n_a:] - R[:, :, :n_a]) * w  # [B, F, n_a, hop], linear in time

    Q = _powers(zm, n_a, dim=2)  # [B, F, n_a, hop]  z**(m a)
    return (Q * U).imag.sum(dim=2)  # [B, F, hop]


def harmonic_synthesis(f0_hz: torch.Tensor, harmonic_amplitudes: torch.Tensor, *,
                       sample_rate: int, hop_length: int, n_samples: int | None = None,
                       prune: bool = True, block_frames: int = 100) -> torch.Tensor:
    """Additive synthesis of harmonics 1..K of a time-varying fundamental.

    Args:
        f0_hz: [B, T, 1] Hz at frame rate.
        harmonic_amplitudes: [B, T, K] linear amplitude of each harmonic (already masked/scaled; see
            :class:`HarmonicSynth` for the controls step).
        sample_rate: Hz.
        hop_length: samples per frame.
        n_samples: output length; default ``T * hop_length`` (longer is padded by holding controls).
        prune: skip harmonics whose amplitude is exactly zero throughout a block (e.g. above
            Nyquist). The result equals the full computation up to float rounding; pruned
            harmonics receive zero gradient, which is exact when the zeros come from a mask.
        block_frames: frames rendered per block (bounds memory: ~ block * hop * sqrt(K) values).

    Returns:
        [B, n_samples] audio.
    """
    _check_frames("f0_hz", f0_hz, 1)
    _check_frames("harmonic_amplitudes", harmonic_amplitudes)
    if f0_hz.shape[:2] != harmonic_amplitudes.shape[:2]:
        raise EnsembleError(
            f"f0_hz {tuple(f0_hz.shape)} and harmonic_amplitudes "
            f"{tuple(harmonic_amplitudes.shape)} must share [B, T]"
        )
    B, T, K = harmonic_amplitudes.shape
    n_samples = T * hop_length if n_samples is None else int(n_samples)
    if T * hop_length < n_samples:  # hold the last frame
        extra = math.ceil(n_samples / hop_length) - T
        f0_hz = torch.cat([f0_hz, f0_hz[:, -1:].expand(-1, extra, -1)], dim=1)
        harmonic_amplitudes = torch.cat(
            [harmonic_amplitudes, harmonic_amplitudes[:, -1:].expand(-1, extra, -1)], dim=1)
        T = f0_hz.shape[1]

    phase = accumulate_phase(f0_hz, sample_rate=sample_rate, hop_length=hop_length)
    phase = phase.reshape(B, T, hop_length)  # [B, T, hop]
    z = torch.polar(torch.ones_like(phase), phase)  # [B, T, hop] complex phasor
    amps_next = torch.cat([harmonic_amplitudes[:, 1:], harmonic_amplitudes[:, -1:]], dim=1)

    blocks = []
    for start in range(0, T, block_frames):
        sl = slice(start, min(start + block_frames, T))
        a, a_next = harmonic_amplitudes[:, sl], amps_next[:, sl]
        k_active = max(_active_harmonics(a), _active_harmonics(a_next)) if prune else K
        if k_active == 0:
            blocks.append(phase.new_zeros(B, a.shape[1], hop_length))
            continue
        blocks.append(_synth_block(z[:, sl], a[..., :k_active], a_next[..., :k_active],
                                   hop_length))
    audio = torch.cat(blocks, dim=1).reshape(B, -1)
    return audio[:, :n_samples]


def naive_harmonic_synthesis(f0_hz: torch.Tensor, harmonic_amplitudes: torch.Tensor, *,
                             sample_rate: int, hop_length: int) -> torch.Tensor:
    """The reference design's synth, kept as a test oracle and benchmark baseline.

    Every harmonic's amplitude and frequency is upsampled to audio rate, the phase is a float32
    cumulative sum per harmonic, then ``sin`` and a sum. Memory is O(N * K).

    Returns:
        [B, T * hop_length] audio.
    """
    K = harmonic_amplitudes.shape[-1]
    k = torch.arange(1, K + 1, dtype=f0_hz.dtype, device=f0_hz.device)
    amps = upsample_frames(harmonic_amplitudes, hop_length)  # [B, N, K]
    freqs = upsample_frames(f0_hz, hop_length) * k  # [B, N, K]
    omegas = TWO_PI * freqs / sample_rate
    phases = torch.cumsum(omegas, dim=1) - omegas
    return (torch.sin(phases) * amps).sum(dim=-1)


def impulse_response_from_magnitudes(magnitudes: torch.Tensor, *,
                                     window_size: int | None = None) -> torch.Tensor:
    """Frequency-sampling FIR design: a windowed, zero-phase impulse response per frame.

    Args:
        magnitudes: [B, T, M] linear magnitude response at M frequencies evenly spaced from 0 Hz to
            Nyquist (inclusive).
        window_size: taps kept (Hann window), odd or even, at most ``2 * (M - 1)``; default all.

    Returns:
        [B, T, window_size] impulse responses, centred (delay ``window_size // 2`` samples).
    """
    _check_frames("magnitudes", magnitudes)
    n_fft = 2 * (magnitudes.shape[-1] - 1)
    if n_fft < 2:
        raise EnsembleError(f"need at least 2 noise bands, got {magnitudes.shape[-1]}")
    window_size = n_fft if window_size is None else int(window_size)
    if not 1 <= window_size <= n_fft:
        raise EnsembleError(f"window_size {window_size} must be in 1..{n_fft}")
    ir = torch.fft.irfft(magnitudes.to(torch.complex64 if magnitudes.dtype == torch.float32
                                       else torch.complex128), n=n_fft)  # [B, T, n_fft] zero-phase
    ir = torch.roll(ir, shifts=window_size // 2, dims=-1)[..., :window_size]  # centred
    window = torch.hann_window(window_size, periodic=False, dtype=ir.dtype, device=ir.device)
    return ir * window


def filtered_noise(magnitudes: torch.Tensor, *, hop_length: int, n_samples: int | None = None,
                   window_size: int | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """White noise shaped by a time-varying FIR filter (FFT convolution per frame, overlap-add).

    Each frame's ``hop_length`` samples of uniform noise in [-1, 1] are convolved with that frame's
    impulse response (see :func:`impulse_response_from_magnitudes`), and the tails overlap-add, so
    the output's power spectrum in frame t follows ``magnitudes[:, t] ** 2 / 3``.

    Args:
        magnitudes: [B, T, M] linear magnitudes (0 Hz..Nyquist).
        hop_length: samples per frame.
        n_samples: output length, default ``T * hop_length``.
        window_size: FIR length (default ``2 * (M - 1)``).
        generator: seeded torch generator for reproducible noise.

    Returns:
        [B, n_samples] audio.
    """
    ir = impulse_response_from_magnitudes(magnitudes, window_size=window_size)  # [B, T, L]
    B, T, L = ir.shape
    n_samples = T * hop_length if n_samples is None else int(n_samples)
    if n_samples > T * hop_length:
        raise EnsembleError(f"n_samples {n_samples} exceeds T * hop = {T * hop_length}")
    noise = torch.rand(B, T, hop_length, generator=generator, dtype=ir.dtype,
                       device=ir.device) * 2.0 - 1.0  # [B, T, hop]
    seg = hop_length + L - 1
    n_fft = 1 << (seg - 1).bit_length()
    out = torch.fft.irfft(torch.fft.rfft(noise, n=n_fft) * torch.fft.rfft(ir, n=n_fft), n=n_fft)
    out = out[..., :seg]  # [B, T, hop + L - 1]
    total = (T - 1) * hop_length + seg
    audio = F.fold(out.transpose(1, 2), output_size=(1, total), kernel_size=(1, seg),
                   stride=(1, hop_length)).reshape(B, total)  # overlap-add
    delay = L // 2  # undo the centring delay of the zero-phase IR
    return audio[:, delay: delay + n_samples]


@dataclass(frozen=True)
class HarmonicSynth:
    """Controls-then-signal wrapper around :func:`harmonic_synthesis`.

    Attributes:
        sample_rate: Hz.
        hop_length: samples per frame.
        n_harmonics: K, harmonics 1..K.
        scale_fn: apply :func:`exp_sigmoid` to raw network outputs in :meth:`get_controls`.
    """

    sample_rate: int = 16000
    hop_length: int = 160
    n_harmonics: int = 100
    scale_fn: bool = True

    def get_controls(self, amplitude: torch.Tensor, harmonic_distribution: torch.Tensor,
                     f0_hz: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs -> {"amplitude" [B,T,1], "harmonic_distribution" [B,T,K] summing to 1 over
        audible harmonics, "harmonic_amplitudes" [B,T,K], "f0_hz" [B,T,1]}."""
        if self.scale_fn:
            amplitude = exp_sigmoid(amplitude)
            harmonic_distribution = exp_sigmoid(harmonic_distribution)
        dist = remove_above_nyquist(harmonic_distribution, f0_hz, sample_rate=self.sample_rate)
        dist = dist / dist.sum(dim=-1, keepdim=True).clamp_min(1e-7)
        return {"amplitude": amplitude, "harmonic_distribution": dist,
                "harmonic_amplitudes": amplitude * dist, "f0_hz": f0_hz}

    def get_signal(self, controls: dict[str, torch.Tensor], n_samples: int | None = None,
                   prune: bool = True) -> torch.Tensor:
        return harmonic_synthesis(controls["f0_hz"], controls["harmonic_amplitudes"],
                                  sample_rate=self.sample_rate, hop_length=self.hop_length,
                                  n_samples=n_samples, prune=prune)


@dataclass(frozen=True)
class FilteredNoiseSynth:
    """Controls-then-signal wrapper around :func:`filtered_noise`."""

    hop_length: int = 160
    n_bands: int = 65
    scale_fn: bool = True
    initial_bias: float = -5.0  # start quiet, as DDSP does

    def get_controls(self, magnitudes: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.scale_fn:
            magnitudes = exp_sigmoid(magnitudes + self.initial_bias)
        return {"noise_magnitudes": magnitudes}

    def get_signal(self, controls: dict[str, torch.Tensor], n_samples: int | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        return filtered_noise(controls["noise_magnitudes"], hop_length=self.hop_length,
                              n_samples=n_samples, generator=generator)


def fade_curves(n: int, kind: str = "equal_power") -> tuple[np.ndarray, np.ndarray]:
    """Fade-out and fade-in gains over ``n`` samples.

    ``linear``: gains sum to 1 (right for correlated signals, e.g. the same note continuing).
    ``equal_power``: cos/sin, squared gains sum to 1 (no loudness dip for uncorrelated signals).

    Returns:
        (fade_out [n], fade_in [n]) float32.
    """
    if n < 1:
        raise EnsembleError(f"crossfade length must be at least 1 sample, got {n}")
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    if kind == "linear":
        fade_in = t
        fade_out = 1.0 - t
    elif kind == "equal_power":
        fade_in = np.sin(0.5 * np.pi * t)
        fade_out = np.cos(0.5 * np.pi * t)
    else:
        raise EnsembleError(f"crossfade kind {kind!r} is not one of 'linear', 'equal_power'")
    return fade_out.astype(np.float32), fade_in.astype(np.float32)


def crossfade(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, n_overlap: int, *,
              kind: str = "equal_power") -> np.ndarray | torch.Tensor:
    """Join ``a`` then ``b`` with their last/first ``n_overlap`` samples crossfaded.

    Args:
        a, b: [..., n] audio (numpy arrays or torch tensors, the same kind).
        n_overlap: samples in the overlap; at most the length of either input.

    Returns:
        [..., len(a) + len(b) - n_overlap], the same kind as the inputs.
    """
    if n_overlap > min(a.shape[-1], b.shape[-1]):
        raise EnsembleError(
            f"crossfade of {n_overlap} samples is longer than an input "
            f"({a.shape[-1]} and {b.shape[-1]} samples)")
    fade_out, fade_in = fade_curves(n_overlap, kind)
    if isinstance(a, torch.Tensor):
        fade_out = torch.as_tensor(fade_out, dtype=a.dtype, device=a.device)
        fade_in = torch.as_tensor(fade_in, dtype=a.dtype, device=a.device)
        mid = a[..., -n_overlap:] * fade_out + b[..., :n_overlap] * fade_in
        return torch.cat([a[..., :-n_overlap], mid, b[..., n_overlap:]], dim=-1)
    mid = a[..., -n_overlap:] * fade_out + b[..., :n_overlap] * fade_in
    return np.concatenate([a[..., :-n_overlap], mid, b[..., n_overlap:]], axis=-1)


def soft_limit(x: np.ndarray | torch.Tensor, *, threshold_db: float = -6.0,
               ceiling_db: float = -0.3) -> np.ndarray | torch.Tensor:
    """Soft-knee limiter for mixes: identity below the threshold, tanh knee up to the ceiling.

    Samples with ``|x| <= threshold`` pass unchanged; above it the curve
    ``thr + (ceil - thr) * tanh((|x| - thr) / (ceil - thr))`` has slope 1 at the threshold and never
    reaches the ceiling, so the peak stays below ``ceiling_db`` dBFS (< 0 dBFS: no clipping).
    """
    thr, ceil = 10.0 ** (threshold_db / 20.0), 10.0 ** (ceiling_db / 20.0)
    if not 0.0 < thr < ceil <= 1.0:
        raise EnsembleError(
            f"need threshold_db < ceiling_db <= 0, got {threshold_db} and {ceiling_db}")
    span = ceil - thr
    if isinstance(x, torch.Tensor):
        mag = x.abs()
        over = thr + span * torch.tanh((mag - thr) / span)
        return torch.where(mag > thr, torch.sign(x) * over, x)
    mag = np.abs(x)
    over = thr + span * np.tanh((mag - thr) / span)
    return np.where(mag > thr, np.sign(x) * over, x).astype(np.asarray(x).dtype, copy=False)
