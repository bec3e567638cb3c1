"""The benchmark's images: a directory of files, or built-in deterministic synthetic images.

The synthetic set needs no download and is the same on every machine (seeded numpy), so runs
on different machines are comparable. It covers the sizes that matter for SAM's cost:
1411x1411 (the issue's click-latency image: larger than the encoder input in both axes, so
preprocessing and full-size mask upscaling are both exercised), a landscape and a portrait
photo size (padding on different sides) and a small image (upscaled on input).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sam_triton.images import load_image

RGBImage = npt.NDArray[np.uint8]

SYNTHETIC_SIZES: tuple[tuple[int, int], ...] = ((1411, 1411), (768, 1024), (1024, 683), (480, 640))
"""(height, width) of the built-in images; the first one is the reference 1411x1411."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True, eq=False)
class BenchImage:
    name: str
    rgb: RGBImage

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "height": self.size[0], "width": self.size[1]}


def synthetic_image(height: int, width: int, seed: int = 0) -> RGBImage:
    """A deterministic HxWx3 image with a few filled shapes on a gradient, plus mild noise.

    Shapes give the model edges and regions (so automatic mask generation has work similar to
    a photo); the noise keeps any codec or cache from seeing trivially repeated content.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / max(width - 1, 1), yy / max(height - 1, 1), 0.5 * np.ones_like(xx)], axis=-1)
    image = base * 160.0 + 40.0
    for _ in range(8):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(0.05, 0.25) * min(height, width)
        color = rng.uniform(0, 255, size=3).astype(np.float32)
        if rng.random() < 0.5:
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        else:
            inside = (np.abs(yy - cy) <= radius) & (np.abs(xx - cx) <= radius * rng.uniform(0.5, 1.5))
        image[inside] = color
    image += rng.normal(0.0, 4.0, size=image.shape).astype(np.float32)
    result: RGBImage = np.clip(image, 0, 255).astype(np.uint8)
    return result


def synthetic_images(sizes: tuple[tuple[int, int], ...] = SYNTHETIC_SIZES, seed: int = 0) -> list[BenchImage]:
    return [
        BenchImage(f"synthetic-{h}x{w}", synthetic_image(h, w, seed + i)) for i, (h, w) in enumerate(sizes)
    ]


def load_directory(directory: Path, limit: int | None = None) -> list[BenchImage]:
    """Every image file directly in ``directory`` (sorted by name), decoded once up front.

    Decoding happens before the run so that file I/O and JPEG decoding are not timed.
    """
    if not directory.is_dir():
        raise FileNotFoundError(f"--images {directory} is not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if limit is not None:
        files = files[:limit]
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {directory}")
    return [BenchImage(p.name, load_image(p)) for p in files]


def bench_images(directory: Path | None = None, limit: int | None = None) -> list[BenchImage]:
    """Images from ``directory``, or the synthetic set when it is None."""
    if directory is not None:
        return load_directory(directory, limit)
    images = synthetic_images()
    return images[:limit] if limit is not None else images


def unique_image(image: BenchImage, index: int, nonce: int) -> RGBImage:
    """A copy of ``image`` whose first 16 bytes encode ``index`` and ``nonce``: distinct content.

    The SDK names server-held embeddings by image content and the server skips encoding an
    image it already holds, so re-sending the same few images would measure cache hits, not
    the encoder. A few changed corner pixels make every request a real encode; ``nonce``
    (one per benchmark run) keeps a second run against the same server from hitting the
    first run's embeddings. The copy is the only cost, and the in-process baselines pay it too.
    """
    rgb = image.rgb.copy()
    flat = rgb.reshape(-1)
    stamp = int(index).to_bytes(8, "little") + int(nonce).to_bytes(8, "little")
    flat[: len(stamp)] = np.frombuffer(stamp, dtype=np.uint8)[: flat.size]
    return rgb


def click_point(index: int, size: tuple[int, int]) -> tuple[float, float]:
    """A deterministic, well-spread (x, y) click for request ``index`` on an image of ``size``.

    The R2 low-discrepancy sequence covers the image evenly in few requests (a random point
    would cluster), and served and in-process baselines get the very same clicks.
    """
    g = 1.32471795724474602596  # plastic number: R2 sequence constants are 1/g and 1/g^2
    u = (0.5 + index / g) % 1.0
    v = (0.5 + index / (g * g)) % 1.0
    h, w = size
    # Keep a margin so a click never lands exactly on the border.
    return 0.05 * w + 0.9 * w * u, 0.05 * h + 0.9 * h * v
