"""Encoders: every registered encoder builds, runs forward/backward, and is normalized."""

from __future__ import annotations

import pytest
import torch

from contrastlab.models import Encoder, Normalize, build_encoder, list_encoders

# one input shape per registered encoder (several for the ones meant for several sizes)
SHAPES: dict[str, list[tuple[int, ...]]] = {
    "mlp": [(8,), (1, 40)],
    "cnn1d": [(1, 40), (40,)],
    "cnn28": [(1, 28, 28), (1, 8, 8), (3, 28, 28)],
    "resnet18-cifar": [(3, 16, 16)],
    "resnet50": [(3, 32, 32)],
    "linear": [(384,)],
}


def test_every_registered_encoder_is_covered() -> None:
    assert set(SHAPES) == set(list_encoders())


@pytest.mark.parametrize(
    ("name", "shape"), [(n, s) for n, shapes in SHAPES.items() for s in shapes]
)
def test_forward_backward_and_sphere(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    enc = build_encoder(name, shape, out_dim=6, normalize="sphere")
    assert isinstance(enc, Encoder)
    x = torch.randn(4, *shape)
    z = enc(x)
    assert z.shape == (4, 6)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4), atol=1e-5, rtol=0)
    z.sum().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads if g is not None)


@pytest.mark.parametrize("kind", ["sphere", "ball", "none"])
def test_normalization_is_the_final_module(kind: str) -> None:
    torch.manual_seed(0)
    enc = build_encoder("mlp", (5,), out_dim=3, normalize=kind, hidden=16)
    assert isinstance(enc.norm, Normalize) and enc.norm.kind == kind
    x = 10 * torch.randn(32, 5)
    raw = enc.head(enc.backbone(x))
    z = enc(x)
    norms = z.norm(dim=1)
    if kind == "sphere":
        torch.testing.assert_close(norms, torch.ones(32), atol=1e-5, rtol=0)
    elif kind == "ball":
        assert bool((norms <= 1 + 1e-6).all())
        inside = raw.norm(dim=1) <= 1
        torch.testing.assert_close(z[inside], raw[inside])
    else:
        torch.testing.assert_close(z, raw)
    assert raw.norm(dim=1).max() > 1.5  # the inputs are large enough for the check to bite


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_projection_head(head: str) -> None:
    enc = build_encoder("mlp", (8,), out_dim=16, head=head, head_dim=4, normalize="sphere")
    x = torch.randn(5, 8)
    assert enc(x).shape == (5, 4)
    assert enc.representation(x).shape == (5, 16)
    assert enc.embed(x, "backbone").shape == (5, 16)
    assert enc.output_dim == 4 and enc.out_dim == 16


def test_resnet50_stems() -> None:
    big = build_encoder("resnet50", (3, 64, 64), out_dim=8)
    assert big.backbone.conv1.kernel_size == (7, 7) and big.backbone.fc.in_features == 2048
    small = build_encoder("resnet50", (3, 32, 32), out_dim=8, stem="cifar")
    assert small.backbone.conv1.stride == (1, 1)
    assert isinstance(small.backbone.maxpool, torch.nn.Identity)
    with pytest.raises(ValueError, match="stem"):
        build_encoder("resnet50", (3, 32, 32), out_dim=8, stem="tiny")


def test_resnet_has_the_cifar_stem() -> None:
    enc = build_encoder("resnet18-cifar", (3, 32, 32), out_dim=8)
    conv1 = enc.backbone.conv1
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1)
    assert isinstance(enc.backbone.maxpool, torch.nn.Identity)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"name": "transformer"}, "model.encoder must be one of"),
        ({"name": "mlp", "widthh": 3}, "widthh"),
        ({"name": "mlp", "normalize": "cube"}, "normalize must be one of"),
        ({"name": "mlp", "head": "deep"}, "model.head must be one of"),
        ({"name": "mlp", "out_dim": 0}, "model.out_dim"),
        ({"name": "cnn28", "shape": (40,)}, "input_shape for encoder 'cnn28'"),
    ],
)
def test_bad_arguments_fail_with_one_line(kwargs: dict, needle: str) -> None:
    name = kwargs.pop("name")
    shape = kwargs.pop("shape", (8,))
    out_dim = kwargs.pop("out_dim", 4)
    with pytest.raises(ValueError, match=needle) as info:
        build_encoder(name, shape, out_dim, **kwargs)
    assert "\n" not in str(info.value)
