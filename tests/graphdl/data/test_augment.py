"""Augmentations on tiny hand-made images, where the right answer is known exactly."""

import numpy as np
import pytest

from graphdl.data.augment import (
    ColorJitter,
    Compose,
    Cutout,
    GaussianNoise,
    HorizontalFlip,
    Rotate,
    Scale,
    Shift,
    VerticalFlip,
    rotate,
    translate,
    zoom,
)

# one 3x3 single-channel image:  0 1 2 / 3 4 5 / 6 7 8
IMAGE = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)


def rng(seed=0):
    return np.random.default_rng(seed)


def test_flips_are_exact():
    np.testing.assert_array_equal(HorizontalFlip(p=1.0)(IMAGE, rng())[0, 0],
                                  [[2, 1, 0], [5, 4, 3], [8, 7, 6]])
    np.testing.assert_array_equal(VerticalFlip(p=1.0)(IMAGE, rng())[0, 0],
                                  [[6, 7, 8], [3, 4, 5], [0, 1, 2]])
    np.testing.assert_array_equal(HorizontalFlip(p=0.0)(IMAGE, rng()), IMAGE)


def test_flip_probability_is_per_sample():
    batch = np.repeat(IMAGE, 400, axis=0)
    out = HorizontalFlip(p=0.5)(batch, rng(1))
    flipped = np.all(out == IMAGE[..., ::-1], axis=(1, 2, 3))
    assert 150 < flipped.sum() < 250
    assert np.all(flipped | np.all(out == IMAGE, axis=(1, 2, 3)))


def test_rotate_90_equals_rot90_odd_and_even_sizes():
    np.testing.assert_array_equal(Rotate((90, 90))(IMAGE, rng())[0, 0], np.rot90(IMAGE[0, 0]))
    square = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(rotate(square, 90.0)[0, 0], np.rot90(square[0, 0]))
    np.testing.assert_array_equal(rotate(square, -90.0)[0, 0], np.rot90(square[0, 0], k=-1))
    np.testing.assert_array_equal(rotate(IMAGE, 0.0), IMAGE)


def test_rotate_keeps_centre_and_fills_corners_with_zero():
    ones = np.ones((1, 1, 9, 9), dtype=np.float32)
    out = rotate(ones, 45.0)[0, 0]
    assert out[4, 4] == 1.0
    assert out[0, 0] == 0.0           # the corner maps from (-1.66, 4): outside the image
    assert 0.0 < out[0, 1] < 1.0      # (-0.95, 4.71): partly blended with the zero fill
    angles = Rotate(10)(np.repeat(ones, 5, axis=0), rng())
    assert angles.shape == (5, 1, 9, 9) and angles.dtype == np.float32


def test_translate_by_one_pixel():
    down = translate(IMAGE, 1, 0)[0, 0]
    np.testing.assert_array_equal(down, [[0, 0, 0], [0, 1, 2], [3, 4, 5]])
    left = translate(IMAGE, 0, -1)[0, 0]
    np.testing.assert_array_equal(left, [[1, 2, 0], [4, 5, 0], [7, 8, 0]])
    np.testing.assert_allclose(translate(IMAGE, 0, 0.5)[0, 0, 0], [0, 0.5, 1.5])


def test_random_shift_picks_whole_pixel_shifts():
    batch = np.repeat(IMAGE, 60, axis=0)
    out = Shift(1)(batch, rng(2))
    candidates = {(dy, dx): translate(IMAGE, dy, dx)[0] for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    used = set()
    for sample in out:
        match = [key for key, image in candidates.items() if np.array_equal(sample, image)]
        assert len(match) == 1
        used.add(match[0])
    assert len(used) == 9
    np.testing.assert_array_equal(Shift(0)(batch, rng()), batch)
    big = np.zeros((1, 1, 10, 10), dtype=np.float32)
    big[0, 0, 5, 5] = 1
    moved = Shift(0.2)(np.repeat(big, 40, axis=0), rng(3))         # up to round(2.0) pixels
    rows, cols = np.nonzero(moved[:, 0])[1:]
    assert np.abs(rows - 5).max() == 2 and np.abs(cols - 5).max() == 2


def test_zoom_by_hand():
    out = zoom(IMAGE, 2.0)[0, 0]
    assert out[1, 1] == 4.0                                # the centre stays
    assert out[0, 0] == pytest.approx((0 + 1 + 3 + 4) / 4)  # reads position (0.5, 0.5)
    np.testing.assert_array_equal(Scale(1.0, 1.0)(IMAGE, rng()), IMAGE)
    small = zoom(np.ones((1, 1, 5, 5)), 0.5)[0, 0]
    assert small[2, 2] == 1.0 and small[0, 0] == 0.0       # shrinking pulls in zero fill


def test_color_jitter():
    batch = np.random.default_rng(0).uniform(size=(20, 3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(ColorJitter()(batch, rng()), batch, rtol=1e-6)
    bright = ColorJitter(brightness=0.5)(batch, rng(1))
    ratio = bright / batch
    np.testing.assert_allclose(ratio, ratio[:, :1, :1, :1] * np.ones_like(ratio), rtol=1e-5)
    assert ratio.min() >= 0.5 - 1e-6 and ratio.max() <= 1.5 + 1e-6
    assert np.ptp(ratio[:, 0, 0, 0]) > 0.1                 # a different factor per sample
    contrast = ColorJitter(contrast=0.5)(batch, rng(2))
    np.testing.assert_allclose(contrast.mean(axis=(1, 2, 3)), batch.mean(axis=(1, 2, 3)),
                               rtol=1e-5)
    assert not np.allclose(contrast.std(axis=(1, 2, 3)), batch.std(axis=(1, 2, 3)))


def test_gaussian_noise():
    zeros = np.zeros((50, 2, 8, 8), dtype=np.float32)
    noisy = GaussianNoise(0.5)(zeros, rng())
    assert noisy.dtype == np.float32
    assert noisy.std() == pytest.approx(0.5, rel=0.05)
    np.testing.assert_array_equal(GaussianNoise(0.0)(IMAGE, rng()), IMAGE)


def test_cutout_zeroes_one_square_per_sample():
    ones = np.ones((30, 2, 6, 6), dtype=np.float32)
    out = Cutout(size=3)(ones, rng())
    for sample in out:
        assert np.sum(sample == 0) == 2 * 9
        rows, cols = np.nonzero(sample[0] == 0)
        assert rows.max() - rows.min() == 2 and cols.max() - cols.min() == 2
        np.testing.assert_array_equal(sample[0], sample[1])   # all channels
    two = Cutout(size=2, count=2)(ones, rng(1))
    zeros = np.sum(two[:, 0] == 0, axis=(1, 2))
    assert zeros.min() >= 4 and zeros.max() <= 8 and np.any(zeros > 4)
    with pytest.raises(ValueError, match="does not fit"):
        Cutout(size=7)(ones, rng())


def test_compose_is_seeded_and_ordered():
    both = Compose([HorizontalFlip(1.0), VerticalFlip(1.0)])
    np.testing.assert_array_equal(both(IMAGE, rng())[0, 0], np.rot90(IMAGE[0, 0], 2))
    pipeline = Compose([Rotate(20), Shift(1), GaussianNoise(0.1), Cutout(1)])
    batch = np.random.default_rng(5).uniform(size=(4, 1, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(pipeline(batch, rng(9)), pipeline(batch, rng(9)))
    assert not np.array_equal(pipeline(batch, rng(9)), pipeline(batch, rng(10)))
    np.testing.assert_array_equal(batch, np.random.default_rng(5).uniform(size=(4, 1, 5, 5))
                                  .astype(np.float32))    # the input is not modified


@pytest.mark.parametrize("call, message", [
    (lambda: HorizontalFlip()(np.ones((3, 3)), rng()), "N, C, H, W"),
    (lambda: HorizontalFlip()(np.ones((1, 1, 3, 3), dtype=np.int64), rng()), "float"),
    (lambda: HorizontalFlip(p=2), "probability"),
    (lambda: Scale(1.2, 1.1), "min_scale"),
    (lambda: Shift(1.5), "fraction"),
    (lambda: Compose([1]), "callables"),
    (lambda: rotate(np.ones((2, 1, 3, 3)), [1.0, 2.0, 3.0]), "one value per sample"),
])
def test_bad_arguments_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()
