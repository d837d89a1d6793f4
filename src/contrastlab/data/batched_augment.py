"""SimCLR's image augmentations on a whole batch at once (``data.augment.engine: batched``).

The same laws and the same random parameters as the per-sample engine of
:func:`contrastlab.data.pairs.augmenter` (drawn by :func:`contrastlab.data.pairs.image_params`),
applied with batched tensor operations: no Python loop over the samples, one thread pool for the
batch, and the batch stays on whatever device it is on (CPU or GPU). Each colour operation equals
its torchvision.transforms.v2 functional (tests/data/test_batched_augment.py); the crop is
``resized_crop`` without antialiasing (bilinear, one ``grid_sample`` for the batch), where the
per-sample engine antialiases: they differ where a box is shrunk, and a SimCLR crop box is
never larger than the image, so only through the antialias filter's rounding when the box equals
the image. Each operation runs only on the samples that take it.

Conventions (Chen et al. 2020, Appendix A; torchvision.transforms.v2): grayscale
``0.2989 R + 0.587 G + 0.114 B``; brightness ``f x``; contrast ``f x + (1 - f) mean(gray(x))``;
saturation ``f x + (1 - f) gray(x)``; hue a rotation of the HSV hue by ``h``; every result
clamped to [0, 1]; Gaussian blur separable with reflection padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ImageParams", "augment_images"]

#: (boxes (n, 4) top/left/h/w, coins (n, 4), factors (n, 3), hues (n,), orders (n, 4),
#: sigmas (n,)): the per-sample parameters of :func:`contrastlab.data.pairs.image_params`
ImageParams = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                    torch.Tensor]


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.to(like.dtype).to(like.device).view(-1, *([1] * (like.ndim - 1)))


def _blend(x: torch.Tensor, other: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = _per_sample(f, x)
    return (f * x + (1.0 - f) * other).clamp(0.0, 1.0)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_div = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_div, (maxc - g) / cr_div, (maxc - b) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(dim=1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    table = torch.stack((torch.stack((v, q, p, p, t, v), 1), torch.stack((t, v, v, q, p, p), 1),
                         torch.stack((p, p, t, v, v, q), 1)), 1)  # (n, 3, 6, H, W)
    idx = i.unsqueeze(1).unsqueeze(2).expand(-1, 3, 1, -1, -1)
    return table.gather(2, idx).squeeze(2)


def _hue(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    hsv = _rgb_to_hsv(x)
    hue = torch.remainder(hsv[:, 0] + _per_sample(h, hsv[:, 0]), 1.0)
    return _hsv_to_rgb(torch.stack((hue, hsv[:, 1], hsv[:, 2]), dim=1))


def _jitter(x: torch.Tensor, op: int, factors: torch.Tensor, hues: torch.Tensor,
            hue_on: bool) -> torch.Tensor:
    if op == 0:
        return (_per_sample(factors[:, 0], x) * x).clamp(0.0, 1.0)
    if op == 1:
        return _blend(x, _gray(x).mean(dim=(-3, -2, -1), keepdim=True), factors[:, 1])
    if op == 2:
        return _blend(x, _gray(x), factors[:, 2])
    return _hue(x, hues) if hue_on else x


def _crop(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Every box resized to the image's size by bilinear interpolation (half-pixel centres,
    the sampling positions clamped to the box: ``resized_crop`` without antialiasing), one
    ``grid_sample`` for the batch."""
    n, _, height, width = x.shape
    top, left, h, w = (boxes[:, j].to(torch.float64).view(-1, 1) for j in range(4))

    def positions(start: torch.Tensor, size: torch.Tensor, out: int, full: int) -> torch.Tensor:
        centres = (torch.arange(out, dtype=torch.float64) + 0.5) * size / out - 0.5
        inside = start + torch.minimum(centres.clamp(min=0.0), size - 1.0)
        return ((inside + 0.5) / full * 2.0 - 1.0).to(x.dtype)  # align_corners=False

    gy = positions(top, h, height, height).to(x.device)  # (n, H)
    gx = positions(left, w, width, width).to(x.device)  # (n, W)
    grid = torch.stack((gx[:, None, :].expand(n, height, width),
                        gy[:, :, None].expand(n, height, width)), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _blur(x: torch.Tensor, sigmas: torch.Tensor, kernel: int) -> torch.Tensor:
    n, c, height, width = x.shape
    half = (kernel - 1) * 0.5
    pos = torch.linspace(-half, half, kernel, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (pos[None, :] / _per_sample(sigmas, pos).view(-1, 1)) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (n c, kernel)
    pad = kernel // 2
    y = F.pad(x.reshape(1, n * c, height, width), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, height, width)


def augment_images(x: torch.Tensor, params: ImageParams, kernel: int, hue_on: bool
                   ) -> torch.Tensor:
    """Random resized crop, flip, colour jitter (random order), grayscale and blur of every image
    of the (N, C, H, W) batch ``x`` with the parameters of
    :func:`contrastlab.data.pairs.image_params` (module docstring)."""
    boxes, coins, factors, hues, orders, sigmas = params
    c = x.shape[1]
    coins, orders = coins.to(x.device), orders.to(x.device)
    v = _crop(x, boxes)
    v = torch.where((coins[:, 0] < 0.5).view(-1, 1, 1, 1), v.flip(-1), v)

    def rows(mask: torch.Tensor) -> torch.Tensor:
        return mask.nonzero().flatten()

    if c == 3:  # each operation on the samples that take it, in each sample's order
        jitter = coins[:, 1] < 0.8
        for position in range(4):
            for op in range(4):
                r = rows(jitter & (orders[:, position] == op))
                if r.numel():
                    v[r] = _jitter(v[r], op, factors[r.cpu()], hues[r.cpu()], hue_on)
        r = rows(coins[:, 2] < 0.2)
        if r.numel():
            v[r] = _gray(v[r]).expand(-1, 3, -1, -1)
    r = rows(coins[:, 3] < 0.5)
    if r.numel():
        v[r] = _blur(v[r], sigmas[r.cpu()], kernel)
    return v
