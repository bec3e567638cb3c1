"""What one benchmark request is, against a served model (through :class:`AsyncSamClient`).

* ``encode``   - ``embed(image)``: preprocessing + ``sam_encoder`` (``SamPredictor.set_image``),
  on distinct content every request (:func:`~.images.unique_image`): the server recognises an
  image it already holds and would not encode it again.
* ``click``    - one point prompt on an image embedded once before the run (``predict``):
  the interactive case. Whatever handle ``embed`` returns is used as is, so when the server
  holds embeddings (``sam_session``) only the prompt travels per click.
* ``oneshot``  - ``segment(image, prompt)``: image + one click in one round trip (``sam``).
* ``automask`` - ``RemoteAutomaticMaskGenerator.generate(image)``.

Request ``i`` uses image ``i % len(images)`` and click :func:`~.images.click_point` ``(i)``;
the in-process baselines (:mod:`.baselines`) use the same rule, so both do the same work.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sam_triton.aio import AsyncSamClient
from sam_triton.prompts import Prompt

from .images import BenchImage, RGBImage, click_point, unique_image
from .loadgen import RequestFn

SCENARIOS = ("encode", "click", "oneshot", "automask")


class ScenarioUnavailable(RuntimeError):
    """The scenario cannot run against this installation or server (the message says why)."""


@dataclass(frozen=True)
class ScenarioOptions:
    multimask_output: bool = True
    """SAM's recommendation for a single click; also what SamPredictor.predict defaults to."""
    points_per_side: int = 32
    """Automatic masks: grid density (SamAutomaticMaskGenerator's default)."""
    points_per_batch: int = 64
    content_nonce: int = field(default_factory=lambda: secrets.randbits(63))
    """Makes this run's encode images differ from any earlier run's (see :func:`encode_image`)."""


@dataclass(frozen=True)
class Prepared:
    """A scenario ready to run: the request callable and facts worth recording with results."""

    request: RequestFn
    notes: dict[str, Any] = field(default_factory=dict)


def click_prompt(index: int, image: BenchImage) -> Prompt:
    x, y = click_point(index, image.size)
    return Prompt(point_coords=[[x, y]], point_labels=[1])


def pick(images: Sequence[BenchImage], index: int) -> BenchImage:
    return images[index % len(images)]


def encode_image(images: Sequence[BenchImage], index: int, opts: ScenarioOptions) -> RGBImage:
    """The image of encode request ``index``: unique to this request and this run."""
    return unique_image(pick(images, index), index, opts.content_nonce)


async def _encode(client: AsyncSamClient, images: Sequence[BenchImage], opts: ScenarioOptions) -> Prepared:
    async def request(i: int) -> None:
        await client.embed(encode_image(images, i, opts))

    return Prepared(request)


async def _click(client: AsyncSamClient, images: Sequence[BenchImage], opts: ScenarioOptions) -> Prepared:
    # Embedding is setup, not measured: the click scenario is the interactive loop after
    # set_image. One embedding per image, kept for the whole run.
    handles = [await client.embed(image.rgb) for image in images]
    server_held = all(h.session_id is not None for h in handles)

    async def request(i: int) -> None:
        await client.predict(
            handles[i % len(handles)], click_prompt(i, pick(images, i)), opts.multimask_output
        )

    return Prepared(
        request,
        {"embedding": "server-held (session)" if server_held else "sent with every click"},
    )


async def _oneshot(client: AsyncSamClient, images: Sequence[BenchImage], opts: ScenarioOptions) -> Prepared:
    async def request(i: int) -> None:
        image = pick(images, i)
        await client.segment(image.rgb, click_prompt(i, image), multimask_output=opts.multimask_output)

    return Prepared(request)


async def _automask(client: AsyncSamClient, images: Sequence[BenchImage], opts: ScenarioOptions) -> Prepared:
    try:
        from sam_triton.automask import RemoteAutomaticMaskGenerator
    except ImportError as exc:
        raise ScenarioUnavailable(
            f"automask: RemoteAutomaticMaskGenerator is not available in this installation ({exc})"
        ) from exc
    # Sharing the bench's AsyncSamClient: same channel, same deadline (--timeout).
    generator = RemoteAutomaticMaskGenerator(
        client, points_per_side=opts.points_per_side, points_per_batch=opts.points_per_batch
    )

    async def request(i: int) -> None:
        await generator.generate_async(pick(images, i).rgb)

    return Prepared(request, {"points_per_side": opts.points_per_side, "model": generator.model})


_FACTORIES: dict[
    str, Callable[[AsyncSamClient, Sequence[BenchImage], ScenarioOptions], Awaitable[Prepared]]
] = {"encode": _encode, "click": _click, "oneshot": _oneshot, "automask": _automask}


async def prepare_served(
    name: str, client: AsyncSamClient, images: Sequence[BenchImage], opts: ScenarioOptions
) -> Prepared:
    """Set up scenario ``name`` (untimed work such as embedding the click images)."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    if not images:
        raise ValueError("no images to benchmark with")
    return await _FACTORIES[name](client, images, opts)
