"""A Locust user that annotates images through the SDK: load from as many machines as it takes.

Use this module as the locustfile (``locust -f`` takes its path, so it imports its package by
name; docs/load-testing/remote-users.md). Each user opens an image (an ``embed`` of fresh
content: a real encode), clicks on it ``--sam-clicks`` times with an exponential think time
(mean ``--sam-think-time`` seconds), a ``--sam-refine-fraction`` of the later clicks refining
the previous answer's best mask (``Prediction.mask_input()``: SAM's refinement), then opens the
next image: the bench's ``session`` scenario, one user per greenlet. Each stage is reported to
Locust's statistics as its own request type (``embed``, ``click``, ``refine``; name: the served
session model), with the bytes the server sent back as the response length, so the master of a
distributed run (``--master``, workers on other machines with ``--worker``) aggregates every
stage from every worker. A user that meets an error other than the SDK's typed ones stops its
image with a Locust exception, which fails the run's exit code.

The SDK's blocking gRPC calls must yield to Locust's event loop, or one user's call would stop
every other user of its worker: gRPC's gevent integration is switched on here, at import,
before any channel exists.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from functools import lru_cache, partial
from itertools import count
from pathlib import Path
from typing import Any, TypeVar

import gevent
import grpc.experimental.gevent as grpc_gevent
import numpy as np
from locust import User, constant, events, task
from sam_triton.client import SamClient
from sam_triton.errors import SamTritonError
from sam_triton.prompts import Prompt
from sam_triton.results import ImageEmbedding, Prediction

from sam_triton_bench.images import BenchImage, bench_images, click_point, unique_image
from sam_triton_bench.session import FOREGROUND_SHARE, POINTS_PER_OBJECT

grpc_gevent.init_gevent()

T = TypeVar("T")

STAGES = ("embed", "click", "refine")
"""The request types this user reports."""


def _options(parser: Any) -> None:
    """Locust hands these to every worker of a distributed run (and shows them in its web UI)."""
    group = parser.add_argument_group("sam-triton session users")
    group.add_argument("--sam-clicks", type=int, default=8, help="clicks per image (default 8)")
    group.add_argument(
        "--sam-think-time", type=float, default=0.5, help="mean seconds before each click (default 0.5)"
    )
    group.add_argument(
        "--sam-refine-fraction",
        type=float,
        default=0.25,
        help="share of the clicks after the first that refine the previous mask (default 0.25)",
    )
    group.add_argument(
        "--sam-images",
        default="",
        help="directory of images to annotate (default: the bench's synthetic images)",
    )
    group.add_argument("--sam-timeout", type=float, default=60.0, help="seconds per SDK call (default 60)")


@lru_cache(maxsize=4)
def _images(directory: str) -> tuple[BenchImage, ...]:
    """Loaded once per worker process, shared by its users (read-only: each embed copies one)."""
    return tuple(bench_images(Path(directory) if directory else None))


events.init_command_line_parser.add_listener(_options)  # type: ignore[no-untyped-call]


class SamSessionUser(User):
    """One annotator: embed, clicks with think time, refinements; ``--host`` is the gRPC address."""

    wait_time = constant(0)  # the next image opens when the last click of this one is answered
    _numbers = count()
    _nonce = secrets.randbits(63)  # per process: a worker never re-sends another worker's images

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.clicks: int = opts.sam_clicks
        self.think_time: float = opts.sam_think_time
        self.refine_fraction: float = opts.sam_refine_fraction
        self.images = _images(opts.sam_images)
        self.rng = np.random.default_rng()
        self._received = 0
        # The API key, when the server wants one, comes from SAM_TRITON_API_KEY on each worker.
        url = self.host or "localhost:8001"
        self.sdk = SamClient(url, timeout=opts.sam_timeout, rpc_observer=self._observe)
        self.model = self.sdk.config.models.session

    def on_stop(self) -> None:
        self.sdk.close()

    def _observe(self, method: str, sent: int, received: int) -> None:
        self._received += received

    def _stage(self, stage: str, call: Callable[[], T]) -> T | None:
        """Run one SDK call and report it to Locust as request type ``stage``."""
        self._received = 0
        started = time.perf_counter()
        result: T | None = None
        failure: SamTritonError | None = None
        try:
            result = call()
        except SamTritonError as exc:  # a refused or failed request is a Locust failure, not a crash
            failure = exc
        self.environment.events.request.fire(
            request_type=stage,
            name=self.model,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=self._received,
            exception=failure,
            context={},
        )
        return result

    @task
    def annotate(self) -> None:
        """One image: embed, then the clicks (the session scenario's user, see module doc)."""
        number = next(self._numbers)
        source = self.images[number % len(self.images)]
        rgb = unique_image(source, number, self._nonce)
        handle = self._stage("embed", lambda: self.sdk.embed(rgb))
        if handle is None:
            return
        points: list[tuple[float, float]] = []
        labels: list[int] = []
        previous: Prediction | None = None
        for _ in range(self.clicks):
            gevent.sleep(float(self.rng.exponential(self.think_time)) if self.think_time > 0 else 0.0)
            if len(points) == POINTS_PER_OBJECT:
                points, labels, previous = [], [], None
            points.append(click_point(int(self.rng.integers(1 << 30)), source.size))
            labels.append(1 if not labels or self.rng.random() < FOREGROUND_SHARE else 0)
            refine = previous is not None and self.rng.random() < self.refine_fraction
            # The server-kept mask when the answer was compact (nothing uploaded), else its logits.
            mask = previous.mask_input() if refine and previous else None
            prompt = Prompt(point_coords=points, point_labels=labels, mask_input=mask)
            answer = self._stage("refine" if refine else "click", partial(self._predict, handle, prompt))
            if answer is not None:
                previous = answer

    def _predict(self, handle: ImageEmbedding, prompt: Prompt) -> Prediction:
        answer = self.sdk.predict(handle, prompt)
        assert isinstance(answer, Prediction)  # one prompt in, one Prediction out
        return answer
