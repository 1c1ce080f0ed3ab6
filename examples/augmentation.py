"""Save a PNG grid of augmented handwritten digits (gd.data.augment).

The first column shows original 8x8 digits; the others show the same digits through a
seeded pipeline of rotation, scaling, shifting, brightness/contrast jitter, Gaussian noise
and cutout, exactly as a DataLoader's `transform=` applies it to each training batch (fresh
random parameters per sample and per epoch). Needs the examples extra (scikit-learn and
matplotlib): pip install "graphdl[examples]".

    python examples/augmentation.py [--out FOLDER] [--samples 6] [--versions 7]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

from graphdl.data import DataLoader, load_digits
from graphdl.data.augment import ColorJitter, Compose, Cutout, GaussianNoise, Rotate, Scale, Shift


def pipeline() -> Compose:
    """The augmentations, in the order they are applied."""
    return Compose([
        Rotate(15),                       # degrees, uniform in [-15, 15]
        Scale(0.9, 1.1),
        Shift(1),                         # whole pixels, in [-1, 1] each way
        ColorJitter(brightness=0.2, contrast=0.2),
        GaussianNoise(0.5),               # pixel values are 0..16
        Cutout(2),
    ])


def save_grid(originals: np.ndarray, versions: list, path: str) -> None:
    """Row i: digit i, then its augmented versions; written as a PNG with matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("this example needs matplotlib: pip install graphdl[examples]") \
            from error
    rows, cols = originals.shape[0], 1 + len(versions)
    figure = Figure(figsize=(1.2 * cols, 1.2 * rows))
    axes = figure.subplots(rows, cols, squeeze=False)
    for i in range(rows):
        images = [originals[i, 0]] + [v[i, 0] for v in versions]
        for j, image in enumerate(images):
            axes[i, j].imshow(image, cmap="gray_r", vmin=0, vmax=16)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[i, 0].set_ylabel("original" if i == 0 else "")
    for j in range(1, cols):
        axes[0, j].set_title(f"aug {j}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)


def main(argv=None) -> str:
    """Augment a few digits, save the grid, check it; return the PNG's path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for the PNG (default: a new temp "
                                                    "folder)")
    parser.add_argument("--samples", type=int, default=6, help="digits (rows)")
    parser.add_argument("--versions", type=int, default=7, help="augmented copies (columns)")
    args = parser.parse_args(argv)

    X_train, y_train, _, _ = load_digits(flatten=False)        # (n, 1, 8, 8) NCHW, 0..16
    originals = X_train[:args.samples]
    augment = pipeline()
    rng = np.random.default_rng(0)
    versions = [augment(originals, rng) for _ in range(args.versions)]

    # The same pipeline in a loader: each epoch draws new parameters from seed + epoch.
    loader = DataLoader((X_train, y_train), batch_size=256, seed=0, transform=augment)
    xb, _ = next(iter(loader))
    assert xb.shape == (256, 1, 8, 8) and xb.dtype == np.float32

    folder = args.out or tempfile.mkdtemp(prefix="graphdl-augmentation-")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "augmented_digits.png")
    save_grid(originals, versions, path)
    print(f"augmentation: {augment}")
    print(f"saved a {args.samples} x {1 + args.versions} grid of digits to {path}")

    assert os.path.getsize(path) > 0, f"{path} is empty"
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    for v in versions:
        assert v.shape == originals.shape and v.dtype == originals.dtype
        changed = np.abs(v - originals).reshape(len(originals), -1).max(axis=1)
        assert (changed > 0).all(), "an augmented digit equals its original"
    assert not np.array_equal(versions[0], versions[1]), "two draws gave the same images"
    return path


if __name__ == "__main__":
    png = main()
    assert os.path.exists(png), f"no image at {png}"
