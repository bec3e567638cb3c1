"""The ``session`` scenario: virtual users annotating images, the load a deployment really sees.

A user opens an image (``embed`` of fresh content, so a real encode) and makes ``clicks`` clicks
on it, each after a random think time (0: back to back, each click sent the moment the previous
answer arrived). Every click adds a point to the object (the first one
foreground, later ones foreground or background; after ``POINTS_PER_OBJECT`` points the user
starts the next object); a ``refine_fraction`` of the clicks after the first also send the
previous answer's best low-res logits as ``mask_input`` (SAM's interactive refinement: the
server runs the full decoder for those), and are reported as the
``refine`` stage. Then the user opens the next image.

Drag mode (``drag_interval``): the user drags the mouse instead, a click every
``drag_interval`` seconds (0.016: a 60 Hz pointer) through :class:`~sam_triton.LatestClick`,
so a newer click cancels the one still in flight; the ``drag`` stage times the clicks that were
answered (from the click to its answer) and :attr:`SessionResult.superseded` counts the others.

Users are a fixed number looping (``users``; closed loop: that many users at all times), or
arrive open loop at ``user_rate`` users/s (each annotates one image; at most ``users`` at a
time, and an arrival's embed latency counts from its arrival, so waiting for a slot is not
hidden). Beside them, optional background load: embedders encoding fresh images back to back,
and automatic-mask jobs back to back, over the same client (one channel, like one gateway).

Each stage (:data:`STAGES`) becomes one :class:`~sam_triton_bench.runner.RunResult`, so the
summaries, the table, ``samples.csv`` and the latency-over-time plot (one panel per stage) are
the ones every scenario uses. On top of those, per stage: rejected requests (the server refused
them for load: :attr:`~.loadgen.Sample.rejected`) counted apart from failures, and the bytes it put on the
wire; and the cache-hit rate of the users' embeds. The run stops starting work after
``warmup + duration`` seconds (a user in think time leaves); requests in flight are awaited.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar

import numpy as np
from sam_triton.aio import AsyncSamClient
from sam_triton.interactive import LatestClick
from sam_triton.prompts import Prompt
from sam_triton.results import ImageEmbedding, Prediction

from .images import BenchImage, RGBImage, click_point, unique_image
from .loadgen import Sample, SampleHook, poisson_arrivals, timed
from .runner import LoadLevel, RunResult

T = TypeVar("T")

STAGES = ("embed", "click", "refine", "drag", "background_embed", "automask")
"""embed/click/refine/drag: what the virtual users wait for; background_embed/automask: the load."""

ThinkDistribution = Literal["exponential", "uniform"]

FOREGROUND_SHARE = 0.75
"""Later clicks are foreground points this often, background points otherwise."""

POINTS_PER_OBJECT = 10
"""An annotator adds a handful of points to an object, then starts the next one (a fresh
first point, no mask): a long click run never grows past the server's points limit."""


@dataclass(frozen=True)
class SessionOptions:
    users: int = 4
    """Closed loop: users at all times. Open loop (``user_rate``): most users at a time."""
    user_rate: float | None = None
    """Open loop: user arrivals per second (Poisson); None: closed loop."""
    clicks: int = 8
    think_time: float = 0.5
    """Mean seconds a user thinks before each click (0: back to back)."""
    drag_interval: float | None = None
    """Drag mode: seconds between a user's clicks, sent through LatestClick whether or not the
    previous one was answered (``think_time`` and ``refine_fraction`` then do not apply)."""
    think_distribution: ThinkDistribution = "exponential"
    """exponential (mean ``think_time``) or uniform in [0, 2 * ``think_time``]."""
    refine_fraction: float = 0.25
    reopen_fraction: float = 0.0
    """Share of images that are re-opened (an image some user embedded before, which the server
    may still hold: the cache-hit rate then measures eviction); the rest are fresh."""
    background_embedders: int = 0
    background_automask: int = 0
    points_per_side: int = 32
    points_per_batch: int = 64
    multimask_output: bool = True
    seed: int = 0
    content_nonce: int = field(default_factory=lambda: secrets.randbits(63))
    """Keeps this run's fresh images apart from any earlier run's (see ``unique_image``)."""

    def __post_init__(self) -> None:
        if self.users < 1 or self.clicks < 1:
            raise ValueError("users and clicks must be >= 1")
        if self.user_rate is not None and not self.user_rate > 0:
            raise ValueError(f"user_rate must be positive, got {self.user_rate}")
        if self.think_time < 0 or self.background_embedders < 0 or self.background_automask < 0:
            raise ValueError("think_time and the background counts must be >= 0")
        if self.drag_interval is not None and not self.drag_interval > 0:
            raise ValueError(f"drag_interval must be positive, got {self.drag_interval}")
        for name in ("refine_fraction", "reopen_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.think_distribution not in ("exponential", "uniform"):
            raise ValueError(f"unknown think_distribution {self.think_distribution!r}")

    @property
    def level(self) -> LoadLevel:
        """The users' load, as the other scenarios describe theirs (open: users/s)."""
        if self.user_rate is None:
            return LoadLevel("closed", concurrency=self.users)
        return LoadLevel("open", rate=self.user_rate)

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "content_nonce"}


@dataclass
class WireCount:
    """RPC attempts and protobuf payload bytes of one stage (measured requests only)."""

    rpcs: int = 0
    sent_bytes: int = 0
    received_bytes: int = 0

    def add(self, sent: int, received: int) -> None:
        self.rpcs += 1
        self.sent_bytes += sent
        self.received_bytes += received


_counting: ContextVar[WireCount | None] = ContextVar("sam_triton_bench_wire", default=None)
"""The counter of the stage whose request the current task is making (None: not counted).

A context variable follows each virtual user's task into the SDK's concurrent RPCs, so one
observer on the shared client attributes every RPC to the stage that caused it."""


def count_rpc(method: str, sent: int, received: int) -> None:
    """The client's ``rpc_observer``."""
    counter = _counting.get()
    if counter is not None:
        counter.add(sent, received)


@dataclass
class SessionResult:
    options: SessionOptions
    runs: list[RunResult]
    """One per stage that ran (in :data:`STAGES` order)."""
    wire: dict[str, WireCount]
    embeds: int
    """Measured user embeds that said whether the server held the image (server-held mode)."""
    cache_hits: int
    users_started: int
    users_turned_away: int
    """Open loop: arrivals that found no free user slot before the run ended."""
    drag_clicks: int = 0
    """Drag mode: measured clicks sent (answered, failed or superseded)."""
    superseded: int = 0
    """Drag mode: measured clicks cancelled in flight by the user's next click."""
    interrupted: bool = False
    """Ctrl-C ended the run early: the stages hold the requests that finished before it."""

    @property
    def cache_hit_rate(self) -> float:
        return self.cache_hits / self.embeds if self.embeds else float("nan")


class _Session:
    def __init__(
        self,
        client: AsyncSamClient,
        images: Sequence[BenchImage],
        opts: SessionOptions,
        duration: float,
        warmup: float,
        on_sample: SampleHook | None,
    ) -> None:
        if not images:
            raise ValueError("no images to benchmark with")
        self.client, self.images, self.opts = client, images, opts
        self.warmup, self.stop_at, self.on_sample = warmup, warmup + duration, on_sample
        self.samples: dict[str, list[Sample]] = {s: [] for s in STAGES}
        self.wire = {s: WireCount() for s in STAGES}
        self._indices = {s: itertools.count() for s in STAGES}
        self._image_numbers = itertools.count()
        self._user_numbers = itertools.count()
        self._opened: list[int] = []
        self.embeds = self.cache_hits = self.turned_away = 0
        self.drag_clicks = self.superseded = 0
        self.t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    async def _stage(
        self, stage: str, thunk: Callable[[], Awaitable[T]], scheduled: float | None = None
    ) -> tuple[T | None, Sample]:
        due = self.now() if scheduled is None else scheduled
        token = _counting.set(self.wire[stage] if due >= self.warmup else None)
        try:
            result, sample = await timed(thunk, next(self._indices[stage]), self.now, self.warmup, due)
        finally:
            _counting.reset(token)
        self._record(stage, sample)
        return result, sample

    def _record(self, stage: str, sample: Sample) -> None:
        self.samples[stage].append(sample)
        if self.on_sample is not None:
            self.on_sample(sample)

    async def _image(self, number: int) -> tuple[BenchImage, RGBImage]:
        """Image ``number``'s source and its unique copy (made off the event loop: a 1411x1411
        copy would hold up the other users' requests for milliseconds)."""
        source = self.images[number % len(self.images)]
        return source, await asyncio.to_thread(unique_image, source, number, self.opts.content_nonce)

    def _pick_image(self, rng: np.random.Generator) -> int:
        if self._opened and rng.random() < self.opts.reopen_fraction:
            return self._opened[int(rng.integers(len(self._opened)))]
        number = next(self._image_numbers)
        self._opened.append(number)
        return number

    def _think(self, rng: np.random.Generator) -> float:
        mean = self.opts.think_time
        if self.opts.think_distribution == "uniform":
            return float(rng.uniform(0.0, 2.0 * mean))
        return float(rng.exponential(mean)) if mean > 0 else 0.0

    async def user(self, scheduled: float | None = None) -> None:
        """One user annotating one image: embed, then the clicks."""
        user = next(self._user_numbers)
        rng = np.random.default_rng([self.opts.seed, user])
        source, rgb = await self._image(self._pick_image(rng))
        handle, sample = await self._stage("embed", partial(self.client.embed, rgb), scheduled)
        if handle is None:
            return
        if not sample.warmup and handle.from_cache is not None:
            self.embeds += 1
            self.cache_hits += handle.from_cache
        if self.opts.drag_interval is not None:
            await self._drag(handle, source, rng, self.opts.drag_interval)
            return
        points: list[tuple[float, float]] = []
        labels: list[int] = []
        previous: Prediction | None = None
        for _ in range(self.opts.clicks):
            think = self._think(rng)
            if self.now() + think >= self.stop_at:
                return
            await asyncio.sleep(think)
            if len(points) == POINTS_PER_OBJECT:
                points, labels, previous = [], [], None
            points.append(click_point(int(rng.integers(1 << 30)), source.size))
            labels.append(1 if not labels or rng.random() < FOREGROUND_SHARE else 0)
            refine = previous is not None and rng.random() < self.opts.refine_fraction
            # The server-kept mask when the answer was compact (nothing uploaded), else its logits.
            mask = previous.mask_input() if refine and previous else None
            prompt = Prompt(point_coords=points, point_labels=labels, mask_input=mask)
            predict = partial(self.client.predict, handle, prompt, self.opts.multimask_output)
            answer, _ = await self._stage("refine" if refine else "click", predict)
            if isinstance(answer, Prediction):
                previous = answer

    async def _drag(
        self, handle: ImageEmbedding, source: BenchImage, rng: np.random.Generator, interval: float
    ) -> None:
        """A mouse drag over the image: a one-point click every ``interval`` s, latest wins."""
        clicks = LatestClick(self.client, handle, multimask_output=self.opts.multimask_output)
        answers: list[asyncio.Task[None]] = []
        measured: list[asyncio.Task[Prediction]] = []
        for _ in range(self.opts.clicks):
            if self.now() >= self.stop_at:
                break
            due = self.now()
            point = click_point(int(rng.integers(1 << 30)), source.size)
            prompt = Prompt(point_coords=[point], point_labels=[1])
            token = _counting.set(self.wire["drag"] if due >= self.warmup else None)  # the task copies it
            try:
                task = clicks.click(prompt)
            finally:
                _counting.reset(token)
            if due >= self.warmup:
                measured.append(task)
            answers.append(asyncio.create_task(self._drag_answer(task, due)))
            await asyncio.sleep(interval)
        await asyncio.gather(*answers)
        self.drag_clicks += len(measured)
        self.superseded += sum(task.cancelled() for task in measured)

    async def _drag_answer(self, click: asyncio.Task[Prediction], due: float) -> None:
        """Times one drag click from its sending to its answer; a superseded one is no sample."""
        await asyncio.wait([click])
        if not click.cancelled():
            _, sample = await timed(lambda: click, next(self._indices["drag"]), self.now, self.warmup, due)
            self._record("drag", sample)

    async def closed_users(self) -> None:
        async def loop() -> None:
            while self.now() < self.stop_at:
                await self.user()

        await asyncio.gather(*(loop() for _ in range(self.opts.users)))

    async def open_users(self, rate: float) -> None:
        arrivals = poisson_arrivals(rate, self.stop_at, np.random.default_rng(self.opts.seed))
        slots = asyncio.Semaphore(self.opts.users)

        async def arrive(due: float) -> None:
            async with slots:
                if self.now() >= self.stop_at:
                    self.turned_away += 1
                    return
                await self.user(scheduled=due)

        tasks = []
        for due in arrivals.tolist():
            delay = due - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(arrive(due)))
        await asyncio.gather(*tasks)

    async def background_embedder(self) -> None:
        while self.now() < self.stop_at:
            _, rgb = await self._image(next(self._image_numbers))
            await self._stage("background_embed", partial(self.client.embed, rgb))

    async def background_automask(self, job: int, generate: Callable[[RGBImage], Awaitable[object]]) -> None:
        for n in itertools.count(job):
            if self.now() >= self.stop_at:
                return
            await self._stage("automask", partial(generate, self.images[n % len(self.images)].rgb))

    def _level(self, stage: str) -> LoadLevel:
        """The load behind a stage: the users, or that many back-to-back background workers."""
        workers = {
            "background_embed": self.opts.background_embedders,
            "automask": self.opts.background_automask,
        }
        if stage in workers:
            return LoadLevel("closed", concurrency=workers[stage])
        return self.opts.level

    def result(self, interrupted: bool = False) -> SessionResult:
        runs = [RunResult(s, self._level(s), samples) for s, samples in self.samples.items() if samples]
        return SessionResult(
            options=self.opts,
            runs=runs,
            wire={s: w for s, w in self.wire.items() if self.samples[s]},
            embeds=self.embeds,
            cache_hits=self.cache_hits,
            users_started=next(self._user_numbers),
            users_turned_away=self.turned_away,
            drag_clicks=self.drag_clicks,
            superseded=self.superseded,
            interrupted=interrupted,
        )


async def run_session(
    client: AsyncSamClient,
    images: Sequence[BenchImage],
    opts: SessionOptions,
    *,
    duration: float,
    warmup: float = 0.0,
    on_sample: SampleHook | None = None,
) -> SessionResult:
    """Run the users and the background load for ``warmup + duration`` seconds.

    ``client`` should count bytes with :func:`count_rpc` as its ``rpc_observer`` (else the
    wire counts stay 0).
    """
    if duration <= 0 or warmup < 0:
        raise ValueError("duration must be positive and warmup >= 0")
    session = _Session(client, images, opts, duration, warmup, on_sample)
    work: list[Awaitable[None]] = [
        session.closed_users() if opts.user_rate is None else session.open_users(opts.user_rate)
    ]
    work += [session.background_embedder() for _ in range(opts.background_embedders)]
    if opts.background_automask:
        from sam_triton.automask import RemoteAutomaticMaskGenerator

        generator = RemoteAutomaticMaskGenerator(
            client, points_per_side=opts.points_per_side, points_per_batch=opts.points_per_batch
        )
        work += [
            session.background_automask(job, generator.generate_async)
            for job in range(opts.background_automask)
        ]
    try:
        await asyncio.gather(*work)
    except asyncio.CancelledError:
        # asyncio.run turns the first Ctrl-C into this cancellation (a second one raises
        # KeyboardInterrupt at once): requests in flight are dropped, finished ones kept.
        return session.result(interrupted=True)
    return session.result()
