"""The downstream check of the method: does an SR network trained on DSGAN pairs do better on real LR?

A small x2 super-resolution network (a few convolutions + pixel shuffle over a bilinear skip, L1 loss),
trained with fixed seeds, crops and steps on (HR, LR) pairs, then scored on held-out (HR, real LR)
pairs by PSNR and SSIM (and LPIPS-AlexNet when weights are given). ``scripts/bench_sr.py`` trains it
on bicubic, DSGAN and oracle pairs per known degradation; ``dsgan demo`` on bicubic and DSGAN pairs.
Training depends only on the seed and the pairs: the same crops in the same order for every pair set.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class SRNet(nn.Module):
    """Small x2 SR net: conv head, ``body`` conv-ReLU layers, conv to 12 channels, pixel shuffle, plus a bilinear skip."""

    # 32 channels: on this CPU 48 ran four times slower per step than 32 (not the 2.25x of the FLOPs).
    def __init__(self, channels: int = 32, body: int = 5):
        super().__init__()
        layers = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(body):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        layers += [nn.Conv2d(channels, 3 * 4, 3, padding=1), nn.PixelShuffle(2)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False) + self.net(x)


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 HWC arrays -> float (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)


def train_sr(hr: list[np.ndarray], lr: list[np.ndarray], seed: int, steps: int, batch: int = 16, crop: int = 24) -> SRNet:
    """Train the SR net with L1 on random aligned x2 crops (``crop`` LR pixels); init, crops, flips and order
    depend only on ``seed``, so pair sets of the same HR are compared on equal terms."""
    with torch.random.fork_rng(devices=[]):  # private randomness: the caller's global stream is left as it was
        torch.manual_seed(seed)
        net = SRNet()
    hr_t, lr_t = to_tensor(hr), to_tensor(lr)
    if hr_t.shape[-2:] != tuple(2 * n for n in lr_t.shape[-2:]):
        raise ValueError(f"HR {tuple(hr_t.shape[-2:])} is not twice LR {tuple(lr_t.shape[-2:])}")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    h, w = lr_t.shape[-2:]
    for _ in range(steps):
        idx = torch.randint(0, len(lr_t), (batch,), generator=g)
        ys = torch.randint(0, h - crop + 1, (batch,), generator=g)
        xs = torch.randint(0, w - crop + 1, (batch,), generator=g)
        flip = torch.rand(batch, generator=g) < 0.5
        lr_b = torch.stack([lr_t[i, :, y : y + crop, x : x + crop] for i, y, x in zip(idx, ys, xs)])
        hr_b = torch.stack([hr_t[i, :, 2 * y : 2 * (y + crop), 2 * x : 2 * (x + crop)] for i, y, x in zip(idx, ys, xs)])
        lr_b[flip], hr_b[flip] = lr_b[flip].flip(-1), hr_b[flip].flip(-1)
        loss = F.l1_loss(net(lr_b), hr_b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def super_resolve(net: SRNet, lrs: list[np.ndarray]) -> list[np.ndarray]:
    """SR outputs of uint8 LR arrays (one size), as uint8 arrays."""
    with torch.no_grad():
        y = net(to_tensor(lrs)).clamp(0, 1).mul(255).round().byte()
    return list(y.permute(0, 2, 3, 1).numpy())


def psnr(a: np.ndarray, b: np.ndarray, border: int = 2) -> float:
    """PSNR in dB over RGB, ``border`` pixels cropped (the SR convention)."""
    a = a[border:-border, border:-border].astype(np.float64)
    b = b[border:-border, border:-border].astype(np.float64)
    return float(10 * np.log10(255.0**2 / max(np.mean((a - b) ** 2), 1e-10)))


def ssim(a: np.ndarray, b: np.ndarray, border: int = 2) -> float:
    """SSIM over RGB (scikit-image, Gaussian window as Wang et al.), ``border`` pixels cropped."""
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            a[border:-border, border:-border],
            b[border:-border, border:-border],
            channel_axis=2,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
        )
    )


def lpips_scores(srs: list[np.ndarray], hrs: list[np.ndarray], alexnet: str) -> list[float]:
    """LPIPS-AlexNet distance per image (the package's LPIPS with the given AlexNet weights)."""
    from ..method.lpips_alex import LPIPSAlex

    net = LPIPSAlex(alexnet).eval()
    with torch.no_grad():
        f_sr, f_hr = net.features(to_tensor(srs)), net.features(to_tensor(hrs))
        return net.distance(f_sr, f_hr).tolist()


def scores(srs: list[np.ndarray], hrs: list[np.ndarray], alexnet: str | None) -> dict[str, float]:
    """Mean PSNR, SSIM (and LPIPS) of SR outputs against HR."""
    out = {"psnr": float(np.mean([psnr(s, h) for s, h in zip(srs, hrs)])), "ssim": float(np.mean([ssim(s, h) for s, h in zip(srs, hrs)]))}
    if alexnet:
        out["lpips"] = float(np.mean(lpips_scores(srs, hrs, alexnet)))
    return out
