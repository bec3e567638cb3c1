"""The ``remote`` scenario: a user behind a constrained link opens a new JPEG photo and clicks.

For each link (:mod:`~sam_triton_bench.link`: a rate and a round trip between the bench and the
server) and each wire format, in one run, with the formats alternating round by round:

- ``before``: the wire format before compact uploads and answers (``image_upload="raw"``,
  ``compact_answers=False``): the decoded pixels go up, every click's low-res logits come down;
- ``compact``: today's defaults: the JPEG file goes up, masks come down run-length encoded.

Each round opens a photo the server has never seen (the image stamped with the round, then
JPEG-encoded, before the clock starts) and times ``embed`` of the JPEG bytes plus the first
click (time to first mask: what the user waits for after opening the photo), then ``clicks - 1``
more clicks back to back, each adding a point. Bytes are the protobuf payloads each way
(``rpc_observer``). Every round uses fresh content, so each embed is a real upload and encode.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from sam_triton import Prompt, SamClient

from .images import BenchImage, click_point, unique_image
from .link import Link, emulated
from .meter import ByteMeter

WIRE_FORMATS: dict[str, dict[str, Any]] = {
    "before": {"image_upload": "raw", "compact_answers": False},
    "compact": {"image_upload": "auto", "compact_answers": True},
}
JPEG_QUALITY = 90
LOOPBACK = "loopback (no link)"
"""The series measured straight to the server first: the client's and server's own time, which
the linked series' time minus it leaves as the link's share."""


@dataclass
class Series:
    """One (link, wire format)'s measurements, one entry per round (clicks: per click)."""

    link: str
    wire: str
    first_mask_s: list[float] = field(default_factory=list)
    embed_s: list[float] = field(default_factory=list)
    click_s: list[float] = field(default_factory=list)
    embed_sent: list[int] = field(default_factory=list)
    click_received: list[int] = field(default_factory=list)
    jpeg_bytes: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def median(values: list[float] | list[int]) -> float:
            return float(statistics.median(values)) if values else float("nan")

        return {
            "link": self.link,
            "wire": self.wire,
            "rounds": len(self.first_mask_s),
            "first_mask_p50_s": median(self.first_mask_s),
            "embed_p50_s": median(self.embed_s),
            "click_p50_s": median(self.click_s),
            "clicks": len(self.click_s),
            "embed_sent_bytes": median(self.embed_sent),
            "click_received_bytes": median(self.click_received),
            "jpeg_bytes": median(self.jpeg_bytes),
        }


def jpeg(image: BenchImage, number: int, nonce: int) -> bytes:
    """A photo no server has seen: ``image`` with a corner block of a colour of its own (a
    change JPEG keeps; :func:`unique_image`'s few stamped bytes can quantize away), as a JPEG."""
    rgb = unique_image(image, number, nonce)
    rng = np.random.default_rng([number, nonce])
    rgb[:16, :16] = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _round(client: SamClient, counter: ByteMeter, photo: bytes, size: tuple[int, int], clicks: int,
           multimask: bool, series: Series, number: int) -> None:  # fmt: skip
    counter.take()
    started = time.perf_counter()
    handle = client.embed(photo)
    embedded = time.perf_counter()
    series.embed_sent.append(counter.take()[0])
    points: list[tuple[float, float]] = []
    for k in range(clicks):
        points.append(click_point(number * 1000 + k, size))
        clicked = time.perf_counter()
        client.predict(handle, Prompt(point_coords=points, point_labels=[1] * len(points)), multimask)
        done = time.perf_counter()
        series.click_received.append(counter.take()[1])
        series.click_s.append(done - clicked)
        if k == 0:
            series.first_mask_s.append(done - started)
            series.embed_s.append(embedded - started)
    series.jpeg_bytes.append(len(photo))


def run_remote(
    url: str,
    images: list[BenchImage],
    links: list[Link],
    rounds: int,
    clicks: int,
    multimask: bool = True,
    nonce: int = 0,
    client_options: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> list[Series]:
    """Every (link, wire format) series, measured as the module says."""
    results: list[Series] = []
    number = 0
    for link in [None, *links]:
        with emulated(url, link) if link is not None else contextlib.nullcontext() as proxy:
            counters = {wire: ByteMeter() for wire in WIRE_FORMATS}
            target = url if proxy is None else proxy.url
            clients = {
                wire: SamClient(target, rpc_observer=counters[wire], **settings, **(client_options or {}))
                for wire, settings in WIRE_FORMATS.items()
            }
            name = LOOPBACK if link is None else link.describe()
            try:
                series = {wire: Series(name, wire) for wire in WIRE_FORMATS}
                for client in clients.values():  # connect and learn the model family first
                    number += 1
                    warm = jpeg(images[0], number, nonce)
                    client.predict(client.embed(warm), Prompt(point_coords=[(1.0, 1.0)], point_labels=[1]))
                for r in range(rounds):
                    order = list(WIRE_FORMATS) if r % 2 == 0 else list(reversed(WIRE_FORMATS))
                    for wire in order:
                        number += 1
                        image = images[r % len(images)]
                        photo = jpeg(image, number, nonce)
                        _round(clients[wire], counters[wire], photo, image.size, clicks, multimask,
                               series[wire], number)  # fmt: skip
                    log(f"  {name}: round {r + 1}/{rounds}")
                results.extend(series.values())
            finally:
                for client in clients.values():
                    client.close()
    return results


def format_remote(series: list[Series]) -> str:
    """A table per link: each wire format's medians, and compact / before."""
    rows = [s.summary() for s in series]
    lines = [
        f"{'link':<26} {'wire':<8} {'first mask':>11} {'embed':>8} {'click':>8} "
        f"{'embed up':>10} {'click down':>11} {'jpeg':>9}"
    ]
    for row in rows:
        lines.append(
            f"{row['link']:<26} {row['wire']:<8} {row['first_mask_p50_s'] * 1000:>9.0f}ms "
            f"{row['embed_p50_s'] * 1000:>6.0f}ms {row['click_p50_s'] * 1000:>6.0f}ms "
            f"{row['embed_sent_bytes']:>10,.0f} {row['click_received_bytes']:>11,.0f} "
            f"{row['jpeg_bytes']:>9,.0f}"
        )
    by_link: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_link.setdefault(row["link"], {})[row["wire"]] = row
    lines.append("\ncompact / before (medians of this run; link share: minus the loopback time):")
    base = by_link.get(LOOPBACK)
    for link, wires in by_link.items():
        new, old = wires["compact"], wires["before"]
        share = ""
        if base is not None and link != LOOPBACK:
            spent = [
                w["first_mask_p50_s"] - base[k]["first_mask_p50_s"]
                for k, w in (("compact", new), ("before", old))
            ]
            share = f" (link share {spent[0] * 1000:.0f} ms vs {spent[1] * 1000:.0f} ms)"
        lines.append(
            f"  {link}: first mask {new['first_mask_p50_s'] / old['first_mask_p50_s']:.2f}x{share}, "
            f"click {new['click_p50_s'] / old['click_p50_s']:.2f}x, "
            f"embed bytes up {new['embed_sent_bytes'] / old['embed_sent_bytes']:.3f}x "
            f"({new['embed_sent_bytes'] / new['jpeg_bytes']:.3f}x the JPEG), "
            f"click bytes down {new['click_received_bytes'] / old['click_received_bytes']:.3f}x"
        )
    return "\n".join(lines)
