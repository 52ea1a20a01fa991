"""Training losses: multi-resolution STFT loss (spectral convergence-free DDSP form)."""

from __future__ import annotations

import torch

__all__ = ["multi_resolution_stft_loss", "DEFAULT_FFT_SIZES"]

DEFAULT_FFT_SIZES = (1024, 512, 256, 128, 64)


def multi_resolution_stft_loss(pred: torch.Tensor, target: torch.Tensor, *,
                               fft_sizes: tuple[int, ...] = DEFAULT_FFT_SIZES,
                               overlap: float = 0.75, log_weight: float = 1.0,
                               eps: float = 1e-5) -> torch.Tensor:
    """DDSP's spectral loss: mean over resolutions of L1(|S|) + log_weight * L1(log |S|).

    Args:
        pred, target: [B, N] audio.
        fft_sizes: STFT sizes (Hann window, hop = size * (1 - overlap)).

    Returns:
        scalar loss (sum over resolutions of per-bin means).
    """
    n = min(pred.shape[-1], target.shape[-1])
    pred, target = pred[..., :n], target[..., :n]
    total = pred.new_zeros(())
    for size in fft_sizes:
        hop = max(1, int(size * (1.0 - overlap)))
        window = torch.hann_window(size, device=pred.device, dtype=pred.dtype)
        sp = torch.stft(pred, size, hop, window=window, return_complex=True).abs()
        st = torch.stft(target, size, hop, window=window, return_complex=True).abs()
        total = total + (sp - st).abs().mean()
        total = total + log_weight * (torch.log(sp + eps) - torch.log(st + eps)).abs().mean()
    return total
