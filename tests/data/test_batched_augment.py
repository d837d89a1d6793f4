"""The batched image augmentations (data.augment.engine: batched) against torchvision's
per-sample functionals, with the parameters of the per-sample engine."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from contrastlab.data import batched_augment as B
from contrastlab.data.pairs import augmenter, check_augment_options, image_params

HAS_CUDA = torch.cuda.is_available()


def _images(n: int = 6, c: int = 3, side: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, c, side, side), generator=torch.Generator().manual_seed(seed))


def test_colour_operations_equal_the_torchvision_functionals() -> None:
    x = _images()
    factors = torch.tensor([[0.6, 1.3, 0.7], [1.4, 0.5, 1.2], [1.0, 1.0, 1.0],
                            [0.9, 1.1, 0.0], [1.2, 0.8, 1.5], [0.7, 1.4, 0.9]],
                           dtype=torch.float64)
    hues = torch.tensor([0.1, -0.2, 0.0, 0.05, -0.5, 0.3], dtype=torch.float64)
    want = {
        0: [TF.adjust_brightness(x[i], float(factors[i, 0])) for i in range(6)],
        1: [TF.adjust_contrast(x[i], float(factors[i, 1])) for i in range(6)],
        2: [TF.adjust_saturation(x[i], float(factors[i, 2])) for i in range(6)],
        3: [TF.adjust_hue(x[i], float(hues[i])) for i in range(6)],
    }
    for op, expected in want.items():
        got = B._jitter(x, op, factors, hues, True)
        torch.testing.assert_close(got, torch.stack(expected), atol=2e-6, rtol=0)
    torch.testing.assert_close(B._gray(x).expand(-1, 3, -1, -1),
                               TF.rgb_to_grayscale(x, num_output_channels=3))


def test_blur_equals_the_torchvision_functional_per_sample() -> None:
    x = _images(c=3, side=24)
    sigmas = torch.tensor([0.1, 0.5, 1.0, 1.7, 2.0, 0.8], dtype=torch.float64)
    got = B._blur(x, sigmas, 5)
    want = torch.stack([TF.gaussian_blur(x[i], [5, 5], [float(s), float(s)])
                        for i, s in enumerate(sigmas)])
    torch.testing.assert_close(got, want, atol=2e-6, rtol=0)


def test_crop_equals_resized_crop() -> None:
    x = _images(side=32)
    boxes = torch.tensor([[0, 0, 32, 32], [3, 5, 20, 16], [10, 0, 22, 32], [0, 8, 12, 24],
                          [4, 4, 24, 24], [16, 16, 16, 16]])
    got = B._crop(x, boxes)
    torch.testing.assert_close(got[0], x[0])  # the whole image: the identity
    for i in range(6):  # a box is never larger than the image: no antialias filter applies
        top, left, h, w = boxes[i].tolist()
        for antialias in (False, True):
            want = TF.resized_crop(x[i], top, left, h, w, [32, 32], antialias=antialias)
            torch.testing.assert_close(got[i], want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_the_batched_engine_draws_as_the_loop_engine_and_stays_close(channels: int) -> None:
    x = _images(n=64, c=channels, side=32, seed=3)
    g_loop, g_batch = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    loop = augmenter("image", 0.5)(x, g_loop)
    batched = augmenter("image", 0.5, engine="batched")(x, g_batch)
    assert torch.equal(g_loop.get_state(), g_batch.get_state())  # the same draws
    assert batched.shape == x.shape and batched.dtype == x.dtype
    assert float(batched.min()) >= 0.0 and float(batched.max()) <= 1.0
    # the same parameters and the same operations: equal to float rounding
    torch.testing.assert_close(batched, loop, atol=1e-4, rtol=0)
    again = augmenter("image", 0.5, engine="batched")(x, torch.Generator().manual_seed(7))
    assert torch.equal(again, batched)


def test_the_engine_is_an_option() -> None:
    assert check_augment_options({"engine": "batched"})["engine"] == "batched"
    with pytest.raises(ValueError, match=r"data\.augment\.engine"):
        check_augment_options({"engine": "gpu"})
    with pytest.raises(ValueError, match="engine must be one of"):
        augmenter("image", 1.0, engine="gpu")
    params = image_params(4, 16, 16, 1.0, torch.Generator().manual_seed(0))
    assert [tuple(p.shape) for p in params] == [(4, 4), (4, 4), (4, 3), (4,), (4, 4), (4,)]


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_the_batched_engine_runs_on_the_gpu() -> None:
    x = _images(n=32, side=32)
    cpu = augmenter("image", 1.0, engine="batched")(x, torch.Generator().manual_seed(1))
    gpu = augmenter("image", 1.0, engine="batched")(x.cuda(), torch.Generator().manual_seed(1))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
