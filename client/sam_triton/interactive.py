"""Interactive clicking: send clicks as fast as the mouse moves, get the newest answer only.

    clicks = LatestClick(client, embedding)          # an AsyncSamClient and a held embedding
    async for event in mouse_moves:                   # however fast they come
        clicks.click(Prompt(point_coords=[event.xy], point_labels=[1]))
    prediction = await clicks.latest()               # the answer to the newest click

Each click supersedes the previous one: a superseded click that has not been sent yet is
dropped, one already on the wire is cancelled (grpc.aio cancels the RPC, so a server that
has not started it never computes it). There is never more than one click in flight, so a
fast mouse builds no backlog on the client or the server.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .prompts import Prompt
from .results import ImageEmbedding, Prediction

if TYPE_CHECKING:
    from .aio import AsyncSamClient


class LatestClick:
    """Latest-click-wins prediction on one embedding (use it inside one event loop).

    Attributes:
        sent: clicks started.
        superseded: clicks cancelled (in flight) or dropped (not sent) by a newer one.
    """

    def __init__(
        self,
        client: AsyncSamClient,
        embedding: ImageEmbedding,
        *,
        multimask_output: bool = True,
        priority: int | None = None,
    ) -> None:
        self.client = client
        self.embedding = embedding
        self.multimask_output = multimask_output
        self.priority = priority
        self._task: asyncio.Task[Prediction] | None = None
        self.sent = 0
        self.superseded = 0

    def click(self, prompt: Prompt) -> asyncio.Task[Prediction]:
        """Start predicting ``prompt``, cancelling the click before it; returns at once."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            self.superseded += 1
        self._task = asyncio.ensure_future(self._predict(prompt))
        self.sent += 1
        return self._task

    async def _predict(self, prompt: Prompt) -> Prediction:
        result = await self.client.predict(
            self.embedding, prompt, self.multimask_output, priority=self.priority
        )
        assert isinstance(result, Prediction)  # one prompt, one prediction
        return result

    async def latest(self) -> Prediction:
        """The answer to the newest click, waiting through clicks that arrive meanwhile."""
        while True:
            task = self._task
            if task is None:
                raise RuntimeError("LatestClick.latest() before any click()")
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.cancelled() or self._task is task or self._task is None:
                    raise  # the caller (or cancel()) cancelled, not a newer click
            # superseded while waiting: wait for the newer click instead

    async def cancel(self) -> None:
        """Cancel the click in flight, if any (e.g. when the image is closed)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
