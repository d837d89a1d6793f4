"""Positive pairs and negative pools for training on a data set.

Two ways to make the positive ``x+`` of an anchor ``x`` (issue: "Positive pairs"):

- ``latent``: ``x+`` is another sample of the anchor's class — the latent-class model of the
  theory (Arora et al. 2019), where anchor and positive are two draws of ``D_c``;
- ``augment``: ``x+`` is an augmented view, and both views are augmented independently
  (SimCLR, Chen et al. 2020).

Negatives: :func:`negative_pool` draws a pool of training indices from the marginal (uniform
over the training set, i.i.d.); the pool is encoded once per step, and any sampler of
:mod:`contrastlab.losses.samplers` chooses each anchor's k negatives from it. k is therefore
independent of the batch size.

Randomness comes only from the ``torch.Generator`` passed in (never torch's global generator):
equal generator states give equal outputs.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from pydantic import Field

from contrastlab._validation import check_choice, check_labels, check_nonnegative
from contrastlab.data.batched_augment import ImageParams, augment_images
from contrastlab.data.options import OptionsModel, parse_options

__all__ = [
    "AUGMENT_KINDS",
    "PAIR_MODES",
    "AugmentOptions",
    "Augmentation",
    "Augmenter",
    "ViewPart",
    "apply_augment",
    "augmenter",
    "check_augment_options",
    "image_params",
    "make_views",
    "negative_pool",
    "plan_views",
    "positive_indices",
    "take",
]

PAIR_MODES = ("latent", "augment")
AUGMENT_KINDS = ("image", "signal", "vector")

Augmenter = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""``aug(x, generator) -> x'``: a random view of every row of the batch ``x`` (same shape)."""


def _check_generator(generator: Any) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator; got {type(generator).__name__}")
    return generator


def _uniform(
    shape: tuple[int, ...], low: float, high: float, generator: torch.Generator
) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


# --------------------------------------------------------------------------------------------
# augmentations
# --------------------------------------------------------------------------------------------


def _crop_boxes(
    n: int, height: int, width: int, min_scale: float, generator: torch.Generator
) -> list[tuple[int, int, int, int]]:
    """Random-resized-crop boxes ``(top, left, h, w)`` with torchvision's algorithm
    (``RandomResizedCrop.get_params``: 10 tries of area in ``[min_scale, 1]`` of the image and
    log-uniform aspect ratio in [3/4, 4/3], then the whole image), drawn from ``generator``
    with a fixed number of draws per sample."""
    tries = 10
    area = height * width * _uniform((n, tries), min_scale, 1.0, generator)
    log_ratio = _uniform((n, tries), math.log(3 / 4), math.log(4 / 3), generator)
    pos = torch.rand((n, 2), generator=generator, dtype=torch.float64)
    ratio = torch.exp(log_ratio)
    ws = torch.round(torch.sqrt(area * ratio)).to(torch.int64).tolist()
    hs = torch.round(torch.sqrt(area / ratio)).to(torch.int64).tolist()
    pos_l = pos.tolist()
    boxes = []
    for i in range(n):
        h, w = height, width  # torchvision's fallback when no try fits (ratio within bounds)
        for j in range(tries):
            if 0 < ws[i][j] <= width and 0 < hs[i][j] <= height:
                h, w = hs[i][j], ws[i][j]
                break
        top = min(int(pos_l[i][0] * (height - h + 1)), height - h)
        left = min(int(pos_l[i][1] * (width - w + 1)), width - w)
        boxes.append((top, left, h, w))
    return boxes


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run per-sample image ops on one intra-op thread (restored after): on small tensors the
    thread pool costs far more than it saves (measured 15x to 100x slower on 2 cores)."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def image_params(n: int, height: int, width: int, strength: float,
                 generator: torch.Generator) -> ImageParams:
    """The random parameters of :func:`augmenter`'s image law for ``n`` images, drawn from
    ``generator`` (a fixed number of draws per sample): crop boxes (n, 4) as (top, left, h, w),
    coins (n, 4) for flip / jitter / grayscale / blur, jitter factors (n, 3), hue shifts (n,),
    jitter orders (n, 4) and blur sigmas (n,)."""
    min_scale = max(0.08, 1.0 - 0.8 * strength)
    jitter = 0.4 * strength
    hue = min(0.5, 0.1 * strength)
    boxes = torch.tensor(_crop_boxes(n, height, width, min_scale, generator),
                         dtype=torch.int64).reshape(n, 4)
    coins = torch.rand((n, 4), generator=generator, dtype=torch.float64)
    factors = _uniform((n, 3), max(0.0, 1.0 - jitter), 1.0 + jitter, generator)
    hues = _uniform((n,), -hue, hue, generator)
    orders = torch.argsort(torch.rand((n, 4), generator=generator), dim=1)
    sigmas = _uniform((n,), 0.1, 0.1 + 1.9 * strength, generator)
    return boxes, coins, factors, hues, orders, sigmas


def _image_kernel(height: int, width: int) -> int:
    """The blur kernel's side: about a tenth of the image's smaller side, odd, >= 3."""
    return max(3, int(0.1 * min(height, width)) // 2 * 2 + 1)


def _image_loop(x: torch.Tensor, params: ImageParams, strength: float) -> torch.Tensor:
    """SimCLR's augmentations (Chen et al. 2020, Appendix A) with torchvision.transforms.v2
    functionals, one image at a time (the per-sample engine; ``batched``:
    :mod:`contrastlab.data.batched_augment`, the same parameters on the whole batch at once),
    with the parameters of :func:`image_params`: random resized crop (area fraction in
    ``[max(0.08, 1 - 0.8 s), 1]``, s the strength), horizontal flip (p 0.5); for 3-channel
    images colour jitter (p 0.8; brightness, contrast, saturation 0.4 s, hue 0.1 s, in a random
    order) and grayscale (p 0.2); Gaussian blur (p 0.5, sigma in ``[0.1, 0.1 + 1.9 s]``, kernel
    about a tenth of the side, odd, >= 3)."""
    from torchvision.transforms.v2 import functional as F

    n, c, height, width = x.shape
    hue = min(0.5, 0.1 * strength)
    kernel = _image_kernel(height, width)
    boxes, coins, factors, hues, orders, sigmas = (p.tolist() for p in params)
    out = torch.empty_like(x)
    with _one_thread():
        for i in range(n):
            top, left, h, w = boxes[i]
            v = F.resized_crop(x[i], top, left, h, w, [height, width], antialias=True)
            if coins[i][0] < 0.5:
                v = F.horizontal_flip(v)
            if c == 3 and coins[i][1] < 0.8:
                for op in orders[i]:
                    if op == 0:
                        v = F.adjust_brightness(v, factors[i][0])
                    elif op == 1:
                        v = F.adjust_contrast(v, factors[i][1])
                    elif op == 2:
                        v = F.adjust_saturation(v, factors[i][2])
                    elif hue > 0:
                        v = F.adjust_hue(v, hues[i])
            if c == 3 and coins[i][2] < 0.2:
                v = F.rgb_to_grayscale(v, num_output_channels=3)
            if coins[i][3] < 0.5:
                v = F.gaussian_blur(v, [kernel, kernel], [sigmas[i], sigmas[i]])
            out[i] = v
    return out


def _signal_draw(shape: tuple[int, ...], strength: float,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, length = shape[0], shape[-1]
    max_shift = round(0.1 * strength * length)
    shift = torch.randint(-max_shift, max_shift + 1, (n,), generator=generator)
    scale = _uniform((n,), max(0.05, 1.0 - 0.2 * strength), 1.0 + 0.2 * strength, generator)
    noise = torch.randn(shape, generator=generator, dtype=torch.float64)
    return shift, scale, noise


def _signal_apply(x: torch.Tensor, params: tuple[torch.Tensor, ...],
                  strength: float) -> torch.Tensor:
    """1-D signals ``(N, C, L)`` or ``(N, L)``: a random shift by up to ``round(0.1 s L)``
    positions (zero padded, not wrapped), an amplitude scale in ``[1 - 0.2 s, 1 + 0.2 s]`` and
    additive Gaussian noise of standard deviation ``0.1 s`` times the sample's RMS."""
    shift, scale, noise = (p.to(x.device) for p in params)
    n, length = x.shape[0], x.shape[-1]
    flat = x.reshape(n, -1, length)
    src = torch.arange(length, device=x.device)[None, :] - shift[:, None]  # out[t] = x[t - shift]
    valid = (src >= 0) & (src < length)
    idx = src.clamp(0, length - 1)[:, None, :].expand_as(flat)
    shifted = torch.where(valid[:, None, :], flat.gather(2, idx), torch.zeros_like(flat))
    rms = flat.to(torch.float64).pow(2).mean(dim=(1, 2)).sqrt()
    sigma = 0.1 * strength * rms
    out = shifted.to(torch.float64) * scale[:, None, None]
    out = out + sigma[:, None, None] * noise.reshape(n, -1, length)
    return out.to(x.dtype).reshape(x.shape)


def _vector_draw(shape: tuple[int, ...], strength: float,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    p_drop = min(0.9, 0.1 * strength)
    noise = torch.randn(shape, generator=generator, dtype=torch.float64)
    keep = torch.rand(shape, generator=generator, dtype=torch.float64) >= p_drop
    return noise, keep


def _vector_apply(x: torch.Tensor, params: tuple[torch.Tensor, ...],
                  strength: float) -> torch.Tensor:
    """Vectors ``(N, d)``: additive Gaussian noise of standard deviation ``0.1 s`` times the
    sample's RMS, then feature dropout (each coordinate zeroed with probability
    ``min(0.9, 0.1 s)``, not rescaled)."""
    noise, keep = (p.to(x.device) for p in params)
    x64 = x.to(torch.float64)
    rms = x64.pow(2).mean(dim=1, keepdim=True).sqrt()
    out = (x64 + 0.1 * strength * rms * noise) * keep
    return out.to(x.dtype)


class Augmentation:
    """A random augmentation of a batch: what :func:`augmenter` returns (the laws are there).

    ``aug(x, generator)`` is ``aug.apply(x, aug.draw(x.shape, generator))``: :meth:`draw` takes
    every random parameter from ``generator`` (a fixed number of draws per sample, from the
    batch's shape alone), :meth:`apply` uses them and draws nothing. The two may run apart, in
    another process or on another device, with the same result: the trainer draws a step's
    parameters in step order and builds its views where it likes
    (:mod:`contrastlab.train.feed`: in DataLoader workers, or on the GPU). Plain data: it
    pickles, so it can be sent to a worker process."""

    def __init__(self, kind: str, strength: float, engine: str = "loop") -> None:
        self.kind, self.strength, self.engine = kind, float(strength), engine

    def __repr__(self) -> str:
        return (f"Augmentation(kind={self.kind!r}, strength={self.strength:g}, "
                f"engine={self.engine!r})")

    def draw(self, shape: Any, generator: torch.Generator) -> Any:
        """The random parameters for a batch of ``shape`` ``(N, *input_shape)``, drawn from
        ``generator``; None at strength 0 (the identity draws nothing)."""
        shape = tuple(int(s) for s in shape)
        if len(shape) not in {"image": (4,), "signal": (2, 3), "vector": (2,)}[self.kind]:
            raise ValueError(f"shape {shape} is not a batch of kind {self.kind!r}")
        generator = _check_generator(generator)
        if self.strength == 0.0:
            return None
        if self.kind == "image":
            return image_params(shape[0], shape[2], shape[3], self.strength, generator)
        if self.kind == "signal":
            return _signal_draw(shape, self.strength, generator)
        return _vector_draw(shape, self.strength, generator)

    def apply(self, x: torch.Tensor, params: Any) -> torch.Tensor:
        """``x`` augmented with ``params`` (from :meth:`draw` for ``x.shape``), on ``x``'s
        device; a copy of ``x`` for None."""
        _check_batch(x, self.kind)
        if params is None:
            return x.clone()
        if self.kind == "image":
            if self.engine == "batched":
                return augment_images(x, params, _image_kernel(x.shape[2], x.shape[3]),
                                      min(0.5, 0.1 * self.strength) > 0)
            return _image_loop(x, params, self.strength)
        if self.kind == "signal":
            return _signal_apply(x, params, self.strength)
        return _vector_apply(x, params, self.strength)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check_batch(x, self.kind)
        return self.apply(x, self.draw(x.shape, generator))


def _check_batch(x: Any, kind: str) -> None:
    ndims = {"image": (4,), "signal": (2, 3), "vector": (2,)}[kind]
    hint = {"image": "(N, C, H, W)", "signal": "(N, C, L) or (N, L)", "vector": "(N, d)"}[kind]
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating torch.Tensor {hint}; got {got}")
    if x.ndim not in ndims:
        raise ValueError(f"x must have shape {hint} for kind {kind!r}; got {tuple(x.shape)}")


class AugmentOptions(OptionsModel):
    """The options of :func:`augmenter` (a config's ``data.augment``): ``strength`` >= 0 and, for
    images, the ``engine``: ``loop`` (per sample, the default) or ``batched`` (the whole batch at
    once, on its device)."""

    strength: float = Field(1.0, ge=0, allow_inf_nan=False)
    engine: Literal["loop", "batched"] = "loop"


def check_augment_options(options: Any) -> dict[str, Any]:
    """``data.augment`` checked against :class:`AugmentOptions`, as keyword arguments of
    :func:`augmenter`; one-line ValueError naming ``data.augment.<option>`` otherwise."""
    return parse_options(AugmentOptions, options, "the augmenter", "data.augment").model_dump()


def augmenter(kind: str, strength: float = 1.0, engine: str = "loop") -> Augmentation:
    """A random augmentation for a batch of inputs of the given kind.

    ``aug = augmenter(kind, strength)``; ``aug(x, generator)`` returns a view of every row of
    ``x`` with its own random parameters, drawn from ``generator`` only (deterministic for a
    given generator state, and torch's global generator is untouched). ``strength`` >= 0 scales
    every perturbation (0: the identity). It is an :class:`Augmentation`: its draws
    (:meth:`~Augmentation.draw`) and its work (:meth:`~Augmentation.apply`) can be separated.
    The kinds (see each helper for the exact laws):

    - ``"image"`` ``(N, C, H, W)`` in [0, 1]: SimCLR-style random resized crop, flip, colour
      jitter and grayscale (3 channels only), Gaussian blur — torchvision.transforms.v2
      functionals applied per sample (``engine="loop"``), or the same laws and parameters on
      the whole batch (``engine="batched"``, :mod:`contrastlab.data.batched_augment`);
    - ``"signal"`` ``(N, C, L)``: random shift (zero padded), amplitude scale, Gaussian noise;
    - ``"vector"`` ``(N, d)``: Gaussian noise and feature dropout.
    """
    check_choice("kind", kind, AUGMENT_KINDS)
    strength = check_nonnegative("strength", strength)
    check_choice("engine", engine, ("loop", "batched"))
    if kind == "image":
        importlib.import_module("torchvision.transforms.v2.functional")  # needed: fail now
    return Augmentation(kind, strength, engine)


def apply_augment(augment: Augmenter, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``augment(x, generator)``, checked: a callable augmenter, and an output of x's shape
    (e.g. one augmented view of every member of a negative pool in ``augment`` mode)."""
    if not callable(augment):
        raise ValueError(f"augment must be callable; got {type(augment).__name__}")
    out = augment(x, _check_generator(generator))
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"augment must return a tensor of shape {tuple(x.shape)}; got {got}")
    return out


# --------------------------------------------------------------------------------------------
# positives, views and negative pools
# --------------------------------------------------------------------------------------------


def _check_index(name: str, idx: Any, n: int) -> torch.Tensor:
    if (
        not isinstance(idx, torch.Tensor)
        or idx.ndim != 1
        or idx.is_floating_point()
        or idx.dtype == torch.bool
    ):
        raise ValueError(f"{name} must be a 1-D integer torch.Tensor of row indices")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"{name} must hold indices in [0, {n - 1}]")
    return idx.to(torch.int64)


def _check_class_labels(name: str, y: Any) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{name} must be a 1-D torch.Tensor of integer class labels")
    check_labels(name, y, int(y.shape[0]) if y.ndim == 1 else -1)
    if y.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    if int(y.min()) < 0:
        raise ValueError(f"{name} must hold class labels >= 0; got {int(y.min())}")
    return y.to(torch.int64)


def positive_indices(
    y: torch.Tensor, idx: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """For each anchor index ``idx[b]``, the index of another sample of the same class.

    Uniform over the other members of the anchor's class (so never the anchor itself), except
    that an anchor alone in its class is its own positive. ``y`` holds the labels of the whole
    training set; the result has the shape of ``idx`` (int64).
    """
    y = _check_class_labels("y", y)
    n = int(y.numel())
    idx = _check_index("idx", idx, n)
    generator = _check_generator(generator)
    order = torch.argsort(y, stable=True)  # rows grouped by class
    counts = torch.bincount(y)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.int64)
    rank[order] = torch.arange(n) - starts[y[order]]  # position of each row within its class
    cls = y[idx]
    size = counts[cls]
    u = torch.rand(idx.shape, generator=generator, dtype=torch.float64)
    r = torch.floor(u * (size - 1).clamp(min=1)).to(torch.int64)
    r = torch.minimum(r, (size - 2).clamp(min=0))
    own = rank[idx]
    pos = torch.where(size > 1, r + (r >= own).to(torch.int64), own)
    return order[starts[cls] + pos]


#: one part of a step's inputs: rows of the training set and the augmentation parameters drawn
#: for them (None: the rows as they are); :func:`plan_views`, :func:`take`
ViewPart = tuple[torch.Tensor, Any]


def plan_views(
    x_shape: Any,
    y_all: torch.Tensor | None,
    idx: torch.Tensor,
    mode: str,
    generator: torch.Generator,
    augment: Augmentation | None = None,
) -> tuple[ViewPart, ViewPart]:
    """What :func:`make_views` draws, without reading x: the rows of the two views and the
    augmentation parameters of each (:meth:`Augmentation.draw`), drawn from ``generator`` in
    make_views' order, so that :func:`take` of each part gives make_views' views bitwise,
    wherever and whenever it runs (another process, another device). ``x_shape``: the shape
    ``(N, *input_shape)`` of x_all."""
    check_choice("mode", mode, PAIR_MODES)
    shape = tuple(int(s) for s in x_shape)
    if len(shape) < 2:
        raise ValueError(f"x_shape must be a shape (N, *input_shape); got {shape}")
    generator = _check_generator(generator)
    idx = _check_index("idx", idx, shape[0])
    if augment is not None and not isinstance(augment, Augmentation):
        raise ValueError("augment must be an Augmentation (see augmenter(kind)) or None; got "
                         f"{type(augment).__name__}")
    rows = (int(idx.shape[0]), *shape[1:])

    def params() -> Any:
        return None if augment is None else augment.draw(rows, generator)

    if mode == "latent":
        if y_all is None:
            raise ValueError("y_all: mode 'latent' needs the class labels of x_all")
        if not isinstance(y_all, torch.Tensor) or y_all.shape[:1] != shape[:1]:
            raise ValueError(f"y_all must hold one label per row of x_all ({shape[0]})")
        positives = positive_indices(y_all, idx, generator)
        first = (idx, params())
        return first, (positives, params())
    if augment is None:
        raise ValueError("augment: mode 'augment' needs an augmenter (see augmenter(kind))")
    first = (idx, params())
    return first, (idx, params())


def take(x_all: torch.Tensor, part: ViewPart, augment: Augmentation | None = None
         ) -> torch.Tensor:
    """The rows of ``part`` (:func:`plan_views`) of ``x_all``, indexed on x_all's device, with
    their augmentation applied there (``augment``: the augmenter that drew its parameters)."""
    rows, params = part
    v = x_all[rows.to(x_all.device)]
    if params is None:
        return v
    if augment is None:
        raise ValueError("augment: this part holds augmentation parameters; pass the "
                         "augmenter that drew them")
    return augment.apply(v, params)


def make_views(
    x_all: torch.Tensor,
    y_all: torch.Tensor | None,
    idx: torch.Tensor,
    mode: str,
    generator: torch.Generator,
    augment: Augmenter | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two views ``(x, x+)`` of the anchors ``x_all[idx]``.

    ``mode="latent"``: ``(x_all[idx], x_all[positive_indices(y_all, idx)])`` (needs ``y_all``;
    ``augment``, when given, is applied to both). ``mode="augment"``: ``(augment(x_all[idx]),
    augment(x_all[idx]))``, two independent draws (needs ``augment``, e.g. from
    :func:`augmenter`). With an :class:`Augmentation` (or none) it is :func:`take` of the
    parts of :func:`plan_views`; any other callable augments as it draws.
    """
    check_choice("mode", mode, PAIR_MODES)
    if not isinstance(x_all, torch.Tensor) or x_all.ndim < 2:
        raise ValueError("x_all must be a torch.Tensor of shape (N, *input_shape)")
    if augment is None or isinstance(augment, Augmentation):  # drawn first, then applied
        first, second = plan_views(x_all.shape, y_all, idx, mode, generator, augment)
        return take(x_all, first, augment), take(x_all, second, augment)
    generator = _check_generator(generator)  # any other callable draws as it goes
    idx = _check_index("idx", idx, int(x_all.shape[0]))
    if not callable(augment):
        raise ValueError(f"augment must be callable or None; got {type(augment).__name__}")
    anchors = x_all[idx]
    if mode == "latent":
        if y_all is None:
            raise ValueError("y_all: mode 'latent' needs the class labels of x_all")
        if not isinstance(y_all, torch.Tensor) or y_all.shape[:1] != x_all.shape[:1]:
            raise ValueError(f"y_all must hold one label per row of x_all ({x_all.shape[0]})")
        positives = x_all[positive_indices(y_all, idx, generator)]
        if augment is not None:
            return augment(anchors, generator), augment(positives, generator)
        return anchors, positives
    if augment is None:
        raise ValueError("augment: mode 'augment' needs an augmenter (see augmenter(kind))")
    return augment(anchors, generator), augment(anchors, generator)


def negative_pool(
    y_all: torch.Tensor,
    size: int,
    generator: torch.Generator,
    anchor_labels: torch.Tensor | None = None,
    supervised: bool = False,
    replace: bool = True,
) -> torch.Tensor:
    """``(size,)`` int64 indices of a pool of negative candidates, i.i.d. uniform over the
    training set (the empirical marginal D; Arora et al. 2019), with replacement; with
    ``replace=False``, ``size`` distinct indices (a uniform random subset, in random order),
    which needs ``size`` <= the number of samples.

    The pool is encoded once per step; the loss's sampler (:mod:`contrastlab.losses.samplers`)
    then picks each anchor's k negatives from it (``uniform``, ``other-class``, ``tilted``...).
    With ``supervised=True`` and ``anchor_labels`` given, the pool is still drawn from the
    marginal, but if it holds no sample of another class for some anchor class (possible only
    for tiny pools), its last entries are replaced by uniform draws from the other classes, so the
    other-class samplers always have a candidate; this needs at least 2 classes in ``y_all``.
    """
    y = _check_class_labels("y_all", y_all)
    n = int(y.numel())
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an integer >= 1; got {size!r}")
    generator = _check_generator(generator)
    if not isinstance(supervised, bool):
        raise ValueError(f"supervised must be True or False; got {supervised!r}")
    if replace:
        pool = torch.randint(0, n, (size,), generator=generator)
    elif size > n:
        raise ValueError(f"size must be <= the number of samples ({n}) when replace=False; "
                         f"got {size}")
    else:
        pool = torch.randperm(n, generator=generator)[:size]
    if not supervised or anchor_labels is None:
        return pool
    if not isinstance(anchor_labels, torch.Tensor) or anchor_labels.ndim != 1:
        raise ValueError("anchor_labels must be a 1-D torch.Tensor of class labels")
    check_labels("anchor_labels", anchor_labels, int(anchor_labels.shape[0]))
    present = torch.unique(y)
    if present.numel() < 2:
        raise ValueError("y_all: supervised negatives need at least 2 classes in the data")
    pool_labels = y[pool]
    anchor_classes = torch.unique(anchor_labels)
    # a class lacks candidates only if the whole pool is of that class: at most one class
    lacking = [c for c in anchor_classes.tolist() if bool((pool_labels == c).all())]
    if lacking:
        if size == 1 and anchor_classes.numel() > 1:
            raise ValueError(
                "size: a pool of 1 cannot hold another-class sample for every anchor class"
            )
        others = torch.nonzero(y != lacking[0]).flatten()
        pick = others[torch.randint(0, int(others.numel()), (1,), generator=generator)]
        pool[-1] = pick[0]
    return pool
