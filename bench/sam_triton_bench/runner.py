"""One benchmark end to end: served load levels, then in-process baselines, in one process.

Served runs and baselines run one after the other, never at the same time: on a small
machine they would steal each other's cores and the ratio would measure the contention.
With ``rounds`` > 1 the measuring time is cut into rounds and every series runs once per
round (served, baseline, served, baseline, ...), so a slow spell of a shared machine lands on
all of them instead of on whichever ran last; each series' rounds are merged into one result.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

from sam_triton.aio import AsyncSamClient
from sam_triton.cli.connection import ConnectionOptions
from sam_triton.config import ModelNames
from sam_triton.errors import SamTritonError

from .baselines import BaselineSpec, prepare_baseline
from .images import BenchImage
from .loadgen import RequestFn, Sample, SampleHook, closed_loop, open_loop
from .progress import RunProgress
from .scenarios import ScenarioOptions, prepare_served
from .stats import Summary, TimelinePoint, summarize, timeline

Mode = Literal["closed", "open"]

PRIME_INDEX = 1 << 40
"""Index of one untimed request made before measuring, served and in-process alike.

Triton warms its models at load (model_warmup); an in-process baseline's first call pays for
onnxruntime/torch allocations and the client's first call for the channel. Priming both keeps
a short run (or ``--warmup 0``) from comparing a cold baseline with a warm server. The index is
far from 0, 1, 2, ... so it never repeats a measured request's image content or click.
"""


@dataclass(frozen=True)
class LoadLevel:
    """Closed loop at ``concurrency`` workers, or open loop at ``rate`` requests/s."""

    mode: Mode
    concurrency: int = 1
    rate: float = 0.0

    @property
    def label(self) -> str:
        return f"c={self.concurrency}" if self.mode == "closed" else f"rate={self.rate:g}/s"

    def describe(self) -> dict[str, Any]:
        if self.mode == "closed":
            return {"mode": "closed", "concurrency": self.concurrency}
        return {"mode": "open", "rate_rps": self.rate}


def sweep_levels(max_concurrency: int) -> list[LoadLevel]:
    """Closed-loop levels 1, 2, 4, ... up to and including ``max_concurrency``."""
    levels, c = [], 1
    while c < max_concurrency:
        levels.append(c)
        c *= 2
    levels.append(max_concurrency)
    return [LoadLevel("closed", concurrency=n) for n in levels]


@dataclass(frozen=True)
class BenchConfig:
    url: str
    scenario: str
    levels: Sequence[LoadLevel]
    duration: float
    warmup: float = 2.0
    seed: int = 0
    max_outstanding: int | None = 1024
    timeout: float = 600.0
    ready_timeout: float = 60.0
    options: ScenarioOptions = field(default_factory=ScenarioOptions)
    baselines: Sequence[BaselineSpec] = ()
    progress: bool = True
    server_embeddings: bool = True
    """The SDK default: embeddings stay on the server; False measures the stateless path."""
    rounds: int = 1
    """Interleaved rounds of ``duration / rounds`` seconds each (after its own warm-up)."""
    connection: ConnectionOptions = field(
        default_factory=lambda: ConnectionOptions(api_key=None, tls=None), repr=False
    )
    """API key and TLS of the served model's endpoint (never printed: it holds the key)."""

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")

    @property
    def round_duration(self) -> float:
        return self.duration / self.rounds


@dataclass
class RunResult:
    """One measured series: a served load level or an in-process baseline."""

    kind: str
    """"served", "reference" or "onnxruntime"."""
    level: LoadLevel
    samples: list[Sample]
    notes: dict[str, Any] = field(default_factory=dict)
    summary: Summary = field(init=False)
    timeline: list[TimelinePoint] = field(init=False)

    def __post_init__(self) -> None:
        self.summary = summarize(self.samples)
        self.timeline = timeline(self.samples)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.level.label}"


async def drive(
    fn: RequestFn, level: LoadLevel, config: BenchConfig, on_sample: SampleHook | None = None
) -> list[Sample]:
    """One round of ``level``: the warm-up, then ``config.round_duration`` seconds measured."""
    if level.mode == "closed":
        return await closed_loop(
            fn,
            concurrency=level.concurrency,
            duration=config.round_duration,
            warmup=config.warmup,
            on_sample=on_sample,
        )
    return await open_loop(
        fn,
        rate=level.rate,
        duration=config.round_duration,
        warmup=config.warmup,
        seed=config.seed,
        max_outstanding=config.max_outstanding,
        on_sample=on_sample,
    )


class _Series:
    """One measured series (a served level or a baseline) collecting its rounds."""

    def __init__(self, kind: str, level: LoadLevel, fn: RequestFn, notes: dict[str, Any]) -> None:
        self.kind, self.level, self.fn, self.notes = kind, level, fn, notes
        self.samples: list[Sample] = []
        self.next_index = 0

    async def measure_round(self, config: BenchConfig, round_index: int) -> None:
        label = f"{config.scenario} {self.level.label if self.kind == 'served' else self.kind}"
        if config.rounds > 1:
            label += f" [{round_index + 1}/{config.rounds}]"
        # Request indices carry on from the previous round: an index picks the image (made
        # unique per index for encodes, which a server-side cache would otherwise answer).
        first = self.next_index

        async def call(index: int) -> None:
            await self.fn(first + index)

        finished: list[Sample] = []  # what a Ctrl-C in the middle of the round keeps

        def on_sample(sample: Sample) -> None:
            finished.append(sample)
            progress.on_sample(sample)

        progress = RunProgress(label, config.warmup + config.round_duration, config.progress)
        try:
            async with progress.ticking():
                samples = await drive(call, self.level, config, on_sample)
        except asyncio.CancelledError:  # Ctrl-C: requests in flight are dropped, finished ones kept
            self._keep(sorted(finished, key=lambda s: s.index), first, config, round_index)
            raise
        self._keep(samples, first, config, round_index)

    def _keep(self, samples: list[Sample], first: int, config: BenchConfig, round_index: int) -> None:
        self.next_index = first + max((s.index for s in samples), default=-1) + 1
        # Rounds follow each other on the series' own clock, so its timeline stays continuous.
        offset = round_index * (config.warmup + config.round_duration)
        self.samples.extend(
            replace(
                s,
                index=first + s.index,
                scheduled=s.scheduled + offset,
                start=s.start + offset,
                end=s.end + offset,
            )
            for s in samples
        )

    def result(self) -> RunResult:
        return RunResult(self.kind, self.level, self.samples, self.notes)

    @property
    def measured(self) -> int:
        return sum(not s.warmup for s in self.samples)


class BenchRun(NamedTuple):
    served: list[RunResult]
    baselines: list[RunResult]
    interrupted: bool = False
    """Stopped by Ctrl-C: the series hold what finished before it (series with nothing
    measured are left out)."""


def _models_needed(scenario: str, names: ModelNames) -> list[str] | None:
    """Models to wait for; None: the SDK's own default set (encoder, decoder, session)."""
    return [names.ensemble] if scenario == "oneshot" else None


def _baseline_series(spec: BaselineSpec, config: BenchConfig, images: Sequence[BenchImage]) -> _Series:
    """The scenario in-process, one request at a time, for the same warm-up and duration."""
    prepared = prepare_baseline(spec, config.scenario, images, config.options)
    prepared.request(PRIME_INDEX)

    async def call(index: int) -> None:
        # Called inline on the event loop, not in a thread: an in-process user pays no hop.
        prepared.request(index)
        # One turn of the loop (microseconds) lets a Ctrl-C's cancellation in between requests:
        # without it the series blocks the loop to the end of its round (minutes for torch).
        await asyncio.sleep(0)

    return _Series(spec.kind, LoadLevel("closed", concurrency=1), call, dict(prepared.notes))


async def wait_for_server(client: AsyncSamClient, config: BenchConfig, models: list[str] | None) -> None:
    """Wait for readiness, saying so at once when the first look fails: a server still loading
    its models refuses connections just like a stopped one, so only the timeout can tell."""
    try:
        await client.wait_until_ready(0.0, models)
        return
    except SamTritonError as first:
        print(
            f"waiting up to {config.ready_timeout:g} s (--ready-timeout) for {config.url} to be ready: "
            f"{first.server_message or first}",
            file=sys.stderr,
            flush=True,
        )
    await client.wait_until_ready(config.ready_timeout, models)


async def _run(config: BenchConfig, images: Sequence[BenchImage]) -> BenchRun:
    client = AsyncSamClient(
        config.url, timeout=config.timeout, server_embeddings=config.server_embeddings, **config.connection
    )
    async with client:
        await wait_for_server(client, config, _models_needed(config.scenario, client.config.models))
        prepared = await prepare_served(config.scenario, client, images, config.options)
        await prepared.request(PRIME_INDEX)
        served = [_Series("served", level, prepared.request, dict(prepared.notes)) for level in config.levels]
        baselines: list[_Series] = []
        try:
            baselines += [_baseline_series(spec, config, images) for spec in config.baselines]
            for round_index in range(config.rounds):
                for series in [*served, *baselines]:
                    await series.measure_round(config, round_index)
        except asyncio.CancelledError:
            # asyncio.run turns the first Ctrl-C into this cancellation (a second one raises
            # KeyboardInterrupt at once): stop measuring, keep what was measured.
            return BenchRun(
                [s.result() for s in served if s.measured],
                [b.result() for b in baselines if b.measured],
                interrupted=True,
            )
    return BenchRun([s.result() for s in served], [b.result() for b in baselines])


def run_all(config: BenchConfig, images: Sequence[BenchImage]) -> BenchRun:
    """Served runs and baseline runs (partial ones after a Ctrl-C, ``interrupted`` then)."""
    return asyncio.run(_run(config, images))
