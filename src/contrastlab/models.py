"""Encoders: a registry of backbones, an optional projection head, and the feature normalization.

An :class:`Encoder` is ``normalize(head(backbone(x)))``:

- the **backbone** maps an input of shape ``input_shape`` (without the batch dimension) to the
  representation of width ``out_dim``; its last layer is linear;
- the optional projection **head** (``none``, ``linear`` or ``mlp``, SimCLR's g) maps the
  representation to ``head_dim`` (default ``out_dim``);
- the **normalization** (``sphere``, ``ball`` or ``none``, from
  :func:`contrastlab.losses.normalize`) is the final module, so the loss sees normalized features
  and the losses are then called with ``normalize="none"``.

Registered backbones (:func:`list_encoders`):

- ``mlp``: flatten, ``depth`` hidden layers of width ``hidden`` with ReLU (optionally
  BatchNorm), then a linear layer to ``out_dim`` (Bao et al.'s toy MLP is depth 3, width 256,
  ``bias_last=False``).
- ``cnn1d``: a 1-D CNN for MNIST-1D-like signals (Greydanus 2020's small CNN: three strided
  convolutions with ReLU, then a linear layer); input (L,) or (channels, L).
- ``cnn28``: a small 2-D CNN for 28 x 28 (Fashion-MNIST) and 8 x 8 (digits) images: three
  3 x 3 conv + BatchNorm + ReLU blocks, max-pooling only while the map is >= 16 pixels wide,
  adaptive average pooling to 2 x 2, then a linear layer; input (H, W) or (channels, H, W).
- ``resnet18-cifar``: torchvision's ResNet-18 with the CIFAR stem (3 x 3 conv, stride 1, no
  max-pool; He et al. 2016 Sec. 4.2, as in SimCLR's CIFAR experiments); its ``fc`` maps the
  512 pooled features to ``out_dim``. Needs torchvision (extra ``vision``).
- ``resnet50``: torchvision's ResNet-50 (He et al. 2016), the encoder of Jiang et al. (CIFAR-100)
  and Robinson et al. / Chuang et al. (STL-10); option ``stem``: ``imagenet`` (default) or
  ``cifar``; its ``fc`` maps the 2048 pooled features to ``out_dim``.
- ``linear``: one linear map, for precomputed embeddings (e.g. the MiniLM sentence vectors).

:func:`build_encoder` builds one; every builder validates its arguments and fails with a one-line
``ValueError`` naming the argument.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from contrastlab._validation import check_choice, check_positive_int
from contrastlab.data.options import OptionsModel, parse_options
from contrastlab.losses.normalize import NORMALIZATIONS
from contrastlab.losses.normalize import normalize as _normalize

HEADS = ("none", "linear", "mlp")
FEATURES = ("output", "backbone")

__all__ = [
    "ENCODERS",
    "FEATURES",
    "HEADS",
    "NORMALIZATIONS",
    "Encoder",
    "EncoderSpec",
    "Normalize",
    "build_encoder",
    "check_encoder_options",
    "list_encoders",
    "register_encoder",
]


class Normalize(nn.Module):
    """Feature normalization as a module: ``sphere``, ``ball`` or ``none``."""

    def __init__(self, kind: str = "sphere") -> None:
        super().__init__()
        self.kind = check_choice("normalize", kind, NORMALIZATIONS)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _normalize(z, self.kind)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


class Encoder(nn.Module):
    """``normalize(head(backbone(x)))``; see the module docstring.

    Attributes:
        name: the registry name of the backbone.
        input_shape: the shape of one input (no batch dimension).
        out_dim: width of the backbone's representation.
        output_dim: width of the final output (``head_dim`` with a head, else ``out_dim``).
    """

    def __init__(
        self,
        name: str,
        backbone: nn.Module,
        head: nn.Module,
        norm: Normalize,
        input_shape: tuple[int, ...],
        out_dim: int,
        output_dim: int,
    ) -> None:
        super().__init__()
        self.name = name
        self.backbone = backbone
        self.head = head
        self.norm = norm
        self.input_shape = input_shape
        self.out_dim = out_dim
        self.output_dim = output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.head(self.backbone(x)))

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's output (before the head and the normalization)."""
        return self.backbone(x)

    def embed(self, x: torch.Tensor, features: str = "output") -> torch.Tensor:
        """``output`` (what the loss sees) or ``backbone`` (the representation) features."""
        check_choice("features", features, FEATURES)
        return self(x) if features == "output" else self.representation(x)


Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class EncoderSpec:
    """A registered backbone: its builder ``(input_shape, out_dim, **options) -> nn.Module``,
    a one-line description, and the data kinds it is meant for."""

    name: str
    builder: Builder
    description: str
    kinds: tuple[str, ...]
    #: the options model (:mod:`contrastlab.data.options`); None: the builder's keyword names
    #: are checked, their values only when it is built
    options: type[OptionsModel] | None = None


ENCODERS: dict[str, EncoderSpec] = {}


def register_encoder(
    name: str, description: str, kinds: Sequence[str] = ("vector", "signal", "image"),
    options: type[OptionsModel] | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator registering a backbone builder under ``name``; ``options`` declares the typed
    options of the builder (its keyword arguments after ``input_shape, out_dim``), so that a
    config's ``model.options`` is checked before any work."""

    def deco(fn: Builder) -> Builder:
        ENCODERS[name] = EncoderSpec(name, fn, description, tuple(kinds), options)
        return fn

    return deco


def list_encoders() -> list[str]:
    """Names of the registered encoders, sorted."""
    return sorted(ENCODERS)


def _check_shape(input_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"input_shape must be a sequence of positive integers; got {input_shape!r}"
        ) from None
    if not shape or any(s < 1 for s in shape):
        raise ValueError(
            f"input_shape must be a sequence of positive integers; got {input_shape!r}"
        )
    return shape


def check_encoder_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options of encoder ``name`` checked (the declared model, else the builder's keyword
    names) and returned as keyword arguments; one-line ValueError naming
    ``model.options.<option>`` and what is allowed."""
    check_choice("model.encoder", name, list_encoders())
    spec = ENCODERS[name]
    if spec.options is not None:
        return parse_options(spec.options, options, f"encoder {name!r}",
                             "model.options").model_dump()
    allowed = [p for p in inspect.signature(spec.builder).parameters
               if p not in ("input_shape", "out_dim")]
    extra = sorted(set(options) - set(allowed))
    if extra:
        raise ValueError(f"model.options.{extra[0]} is not an option of encoder {name!r}; "
                         f"allowed: {', '.join(allowed) or '(none)'}")
    return dict(options)


class MlpOptions(OptionsModel):
    """``mlp``: ``hidden`` width, ``depth`` hidden layers (0: linear), ``batch_norm``,
    ``bias_last`` (a bias in the last layer)."""

    hidden: int = Field(256, ge=1)
    depth: int = Field(2, ge=0)
    batch_norm: bool = False
    bias_last: bool = True


class CnnOptions(OptionsModel):
    """``cnn1d`` / ``cnn28``: the channel ``width`` of the first convolution."""

    width: int = Field(32, ge=1)


class LinearOptions(OptionsModel):
    """``linear``: a ``bias``."""

    bias: bool = True


class NoOptions(OptionsModel):
    """An encoder without options."""


# --------------------------------------------------------------------------------------------
# backbones
# --------------------------------------------------------------------------------------------


@register_encoder("mlp", "multi-layer perceptron on flattened inputs (any shape)",
                  options=MlpOptions)
def _mlp(
    input_shape: tuple[int, ...],
    out_dim: int,
    hidden: int = 256,
    depth: int = 2,
    batch_norm: bool = False,
    bias_last: bool = True,
) -> nn.Module:
    check_positive_int("model.options.hidden", hidden)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"model.options.depth must be an integer >= 0; got {depth!r}")
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for _ in range(depth):
        layers.append(nn.Linear(width, hidden))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(nn.ReLU())
        width = hidden
    layers.append(nn.Linear(width, out_dim, bias=bool(bias_last)))
    return nn.Sequential(*layers)


class _AddChannel(nn.Module):
    """Insert a channel dimension when the input has ``ndim`` (per-sample) dimensions."""

    def __init__(self, ndim: int) -> None:
        super().__init__()
        self.ndim = ndim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1) if x.ndim == self.ndim + 1 else x


def _channels_and_size(input_shape: tuple[int, ...], spatial: int, name: str) -> tuple[int, int]:
    if len(input_shape) == spatial:
        return 1, input_shape[-1]
    if len(input_shape) == spatial + 1:
        return input_shape[0], input_shape[-1]
    want = "(L,) or (channels, L)" if spatial == 1 else "(H, W) or (channels, H, W)"
    raise ValueError(f"input_shape for encoder {name!r} must be {want}; got {input_shape}")


def _flat_size(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        was = module.training
        module.eval()
        out = module(torch.zeros(2, *input_shape))
        module.train(was)
    return int(out[0].numel())


@register_encoder("cnn1d", "1-D CNN for MNIST-1D-like signals, input (L,) or (C, L)", ("signal",),
                  options=CnnOptions)
def _cnn1d(input_shape: tuple[int, ...], out_dim: int, width: int = 32) -> nn.Module:
    check_positive_int("model.options.width", width)
    channels, _ = _channels_and_size(input_shape, 1, "cnn1d")
    trunk = nn.Sequential(
        _AddChannel(1),
        nn.Conv1d(channels, width, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
    )
    return nn.Sequential(trunk, nn.Linear(_flat_size(trunk, input_shape), out_dim))


@register_encoder("cnn28", "small 2-D CNN for 28x28 and 8x8 images, input (H, W) or (C, H, W)",
                  ("image",), options=CnnOptions)
def _cnn28(input_shape: tuple[int, ...], out_dim: int, width: int = 32) -> nn.Module:
    check_positive_int("model.options.width", width)
    channels, size = _channels_and_size(input_shape, 2, "cnn28")
    layers: list[nn.Module] = [_AddChannel(2)]
    c_in = channels
    for i, c_out in enumerate((width, 2 * width, 4 * width)):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU()]
        if size >= 16 and i < 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten()]
    return nn.Sequential(*layers, nn.Linear(4 * c_in, out_dim))


@register_encoder("resnet18-cifar", "torchvision ResNet-18 with the CIFAR stem (3x3 conv, no "
                  "max-pool), input (C, H, W)", ("image",), options=NoOptions)
def _resnet18_cifar(input_shape: tuple[int, ...], out_dim: int) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(
            f"input_shape for encoder 'resnet18-cifar' must be (channels, H, W); got {input_shape}"
        )
    try:
        from torchvision.models import resnet18
    except ImportError as exc:  # pragma: no cover - torchvision is a declared extra
        raise ValueError(
            "encoder 'resnet18-cifar' needs torchvision: pip install 'contrastlab[vision]'"
        ) from exc
    net = resnet18(weights=None, num_classes=out_dim)
    net.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


class ResNet50Options(OptionsModel):
    """``resnet50``: the ``stem``: ``imagenet`` (7 x 7 conv, stride 2, max-pool; for 96 px and
    up, e.g. STL-10) or ``cifar`` (3 x 3 conv, stride 1, no max-pool; for 32 px)."""

    stem: Literal["imagenet", "cifar"] = "imagenet"


@register_encoder("resnet50", "torchvision ResNet-50 (stem imagenet or cifar), input (C, H, W)",
                  ("image",), options=ResNet50Options)
def _resnet50(input_shape: tuple[int, ...], out_dim: int, stem: str = "imagenet") -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(
            f"input_shape for encoder 'resnet50' must be (channels, H, W); got {input_shape}")
    try:
        from torchvision.models import resnet50
    except ImportError as exc:  # pragma: no cover - torchvision is a declared extra
        raise ValueError("encoder 'resnet50' needs torchvision: pip install 'contrastlab[vision]'"
                         ) from exc
    net = resnet50(weights=None, num_classes=out_dim)
    if stem == "cifar":
        net.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif input_shape[0] != 3:
        net.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


@register_encoder("linear", "a linear map, for precomputed embeddings", options=LinearOptions)
def _linear(input_shape: tuple[int, ...], out_dim: int, bias: bool = True) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), out_dim, bias=bool(bias)))


# --------------------------------------------------------------------------------------------
# heads and the full encoder
# --------------------------------------------------------------------------------------------


def _head(kind: str, in_dim: int, out_dim: int, hidden: int | None) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    width = in_dim if hidden is None else check_positive_int("model.head_hidden", hidden)
    return nn.Sequential(nn.Linear(in_dim, width), nn.ReLU(), nn.Linear(width, out_dim))


def build_encoder(
    name: str,
    input_shape: Sequence[int],
    out_dim: int,
    head: str = "none",
    normalize: str = "sphere",
    head_dim: int | None = None,
    head_hidden: int | None = None,
    **options: Any,
) -> Encoder:
    """Build a registered encoder followed by its head and normalization.

    Args:
        name: a name of :func:`list_encoders`.
        input_shape: shape of one input, without the batch dimension.
        out_dim: width of the backbone's representation.
        head: ``none``, ``linear`` or ``mlp`` (Linear-ReLU-Linear, hidden width ``head_hidden``,
            default ``out_dim``).
        normalize: ``sphere``, ``ball`` or ``none``, applied last.
        head_dim: output width of the head (default ``out_dim``); only with a head.
        options: backbone options (``mlp``: hidden, depth, batch_norm, bias_last; ``cnn1d`` and
            ``cnn28``: width; ``linear``: bias; ``resnet18-cifar``: none).
    """
    check_choice("model.encoder", name, list_encoders())
    shape = _check_shape(input_shape)
    out_dim = check_positive_int("model.out_dim", out_dim)
    check_choice("model.head", head, HEADS)
    norm = Normalize(normalize)
    if head == "none" and head_dim is not None and head_dim != out_dim:
        raise ValueError(f"model.head_dim needs a head (model.head is 'none'); got {head_dim}")
    final = out_dim if head_dim is None else check_positive_int("model.head_dim", head_dim)
    kwargs = check_encoder_options(name, options)
    backbone = ENCODERS[name].builder(shape, out_dim, **kwargs)
    return Encoder(name, backbone, _head(head, out_dim, final, head_hidden), norm, shape,
                   out_dim, final)
