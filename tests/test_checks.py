"""course_lib.checks: each check passes good input through and names what is wrong with bad input."""
import pytest
import torch

from course_lib.checks import IMAGE_SHAPE, check_image_batch, check_images, check_labels, check_timesteps


def test_check_images_passes_a_float_set_and_explains_each_failure():
    x = torch.rand(3, *IMAGE_SHAPE)
    assert check_images(x) is x
    assert check_images(x[:0]).shape == (0, 1, 28, 28)  # an empty set is a set, unless its range is asked for
    with pytest.raises(ValueError, match=r"x: expected float images \(N, 1, 28, 28\), got shape \(3, 28, 28\)"):
        check_images(x[:, 0], "x")
    with pytest.raises(ValueError, match=r"dtype torch.uint8 \(convert with x.float\(\) / 255\)"):
        check_images((255 * x).byte())
    with pytest.raises(ValueError, match=r"with values in \[0, 1\], got no images"):
        check_images(x[:0], unit_range=True)
    signed = torch.linspace(-0.9, 0.8, 28 * 28).view(1, *IMAGE_SHAPE)  # a model's [-1, 1] output, known range
    with pytest.raises(ValueError, match=r"got values in \[-0.9, 0.8\].*\(x \+ 1\) / 2"):
        check_images(signed, unit_range=True)
    with pytest.raises(ValueError, match="values in"):
        check_images(torch.full((1, *IMAGE_SHAPE), float("nan")), unit_range=True)
    assert check_images(torch.rand(2, 1, 32, 32), shape=(1, 32, 32)).shape == (2, 1, 32, 32)


def test_check_image_batch_matches_ints_and_multiples():
    x = torch.zeros(2, 1, 32, 28)
    assert check_image_batch(x, "Net", (1, "H", "W"), multiple=4) is x
    with pytest.raises(ValueError, match=r"Net expects images of shape \(B, 1, H, W\) with H and W divisible by 8, "
                                         r"got \(2, 1, 32, 28\). \(Pad or crop"):
        check_image_batch(x, "Net", (1, "H", "W"), multiple=8)
    with pytest.raises(ValueError, match=r"got \(1, 32, 28\). \(Add a channel dim with x\[:, None\]"):
        check_image_batch(x[0], "Net", (1, "H", "W"))
    with pytest.raises(ValueError, match=r"D expects latents of shape \(B, 4, h, w\), got \(2, 1, 32, 28\)\.$"):
        check_image_batch(x, "D", (4, "h", "w"), what="latents")
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\), got \(2, 1, 32, 28\)"):
        check_image_batch(x, "D", IMAGE_SHAPE)


def test_check_labels_shape_dtype_and_range():
    assert check_labels([3, 0, 9], 3).dtype == torch.int64
    assert check_labels(torch.empty(0, dtype=torch.long), 0, num_classes=10).shape == (0,)
    with pytest.raises(ValueError, match=r"y: expected 3 integer labels >= 0, shape \(3,\); got torch.int64 of shape"):
        check_labels(torch.tensor([1, 2]), 3, "y")
    with pytest.raises(ValueError, match="got torch.float32"):
        check_labels(torch.tensor([1.0, 2.0]), 2)
    with pytest.raises(ValueError, match=r"in \[0, 10\), shape \(2,\); got values in \[-1, 10\]"):
        check_labels(torch.tensor([-1, 10]), 2, num_classes=10)
    meta = torch.tensor([0, 11], device="meta")  # holds no values: reading one would raise
    assert check_labels(meta, 2, num_classes=10, values=False).device.type == "meta"


def test_check_timesteps_broadcasts_one_int():
    assert torch.equal(check_timesteps(7, 3, "UNet"), torch.tensor([7, 7, 7]))
    assert torch.equal(check_timesteps(torch.tensor([1, 2]), 2, "UNet"), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"UNet expects t of shape \(2,\) or a single int, got \(3,\)"):
        check_timesteps(torch.arange(3), 2, "UNet")
