"""A tqdm progress bar over the wall-clock length of a run, with live counts.

The bar advances with time (a run is ``warmup + duration`` seconds long whatever the request
rate), and the postfix shows completed requests, errors and the rolling request rate. It is
fed by the load generator's per-sample hook plus a ticker task, so it moves even while a
single slow request (a vit_b encode) is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from .loadgen import Sample


class RunProgress:
    def __init__(self, label: str, total_s: float, enabled: bool = True) -> None:
        from tqdm import tqdm

        self._bar: Any = tqdm(
            total=round(total_s, 1),
            desc=label,
            unit="s",
            disable=not enabled,
            file=sys.stderr,
            leave=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f}s{postfix}",
        )
        self._total = total_s
        self._t0 = self._last = time.perf_counter()
        self.min_interval_s = 0.5
        self.done = 0
        self.errors = 0
        self.rejected = 0

    def on_sample(self, sample: Sample) -> None:
        self.done += 1
        self.rejected += sample.rejected
        self.errors += not sample.ok and not sample.rejected
        # In-process baselines block the event loop between samples, so the ticker cannot
        # run then: refresh from here too, but at most a few times per second.
        if time.perf_counter() - self._last >= self.min_interval_s:
            self.refresh()

    def refresh(self) -> None:
        now = time.perf_counter()
        self._last = now
        elapsed = min(now - self._t0, self._total)
        self._bar.n = round(elapsed, 1)
        rate = self.done / elapsed if elapsed > 0 else 0.0
        self._bar.set_postfix_str(
            f"{self.done} req, {self.errors} err, {self.rejected} rej, {rate:.1f} req/s", refresh=False
        )
        self._bar.refresh()

    def close(self) -> None:
        self.refresh()
        self._bar.close()

    @contextlib.asynccontextmanager
    async def ticking(self, interval_s: float = 0.5) -> AsyncIterator[RunProgress]:
        """Refresh every ``interval_s`` while the body runs; close the bar afterwards."""

        async def tick() -> None:
            while True:
                await asyncio.sleep(interval_s)
                self.refresh()

        task = asyncio.create_task(tick())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.close()
