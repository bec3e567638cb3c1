"""Interactive clicking: send clicks as fast as the mouse moves, get the newest answer only.

    clicks = LatestClick(client, embedding)          # an AsyncSamClient and a held embedding
    async for event in mouse_moves:                   # however fast they come
        clicks.click(Prompt(point_coords=[event.xy], point_labels=[1]))
    prediction = await clicks.latest()               # the answer to the newest click

Each click supersedes the previous one: a superseded click that has not been sent yet is
dropped, one already on the wire is cancelled (grpc.aio cancels the RPC, so a server that
has not started it never computes it). There is never more than one click in flight, so a
fast mouse builds no backlog on the client or the server.

:class:`LatestClickThread` does the same for a blocking :class:`~sam_triton.SamClient` from
a UI thread: one worker thread sends the newest click; superseded clicks not yet sent are
dropped, and the answer to one sent before a newer click arrived is discarded (a blocking
call cannot be cancelled, so it runs to its end, one click at most).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Generic, TypeVar

from .aio import AsyncSamClient
from .client import SamClient
from .prompts import Prompt
from .results import ImageEmbedding, Prediction

C = TypeVar("C")


class _Clicks(Generic[C]):
    """What both helpers hold: where clicks go, how they are predicted, and two counters."""

    def __init__(
        self,
        client: C,
        embedding: ImageEmbedding,
        *,
        multimask_output: bool = True,
        priority: int | None = None,
    ) -> None:
        self.client = client
        self.embedding = embedding
        self.multimask_output = multimask_output
        self.priority = priority
        self.sent = 0
        self.superseded = 0


class LatestClick(_Clicks[AsyncSamClient]):
    """Latest-click-wins prediction on one embedding (use it inside one event loop).

    Attributes:
        sent: clicks started.
        superseded: clicks cancelled (in flight) or dropped (not sent) by a newer one.
    """

    _task: asyncio.Task[Prediction] | None = None

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


class LatestClickThread(_Clicks[SamClient]):
    """Latest-click-wins for a blocking SamClient: ``click`` returns at once, ``latest`` waits.
    Takes LatestClick's arguments; ``close()`` (or ``with``) stops its worker thread.

    Attributes:
        sent: clicks sent to the server.
        superseded: clicks dropped before sending, or answered after a newer click arrived.
    """

    def __init__(
        self,
        client: SamClient,
        embedding: ImageEmbedding,
        *,
        multimask_output: bool = True,
        priority: int | None = None,
    ) -> None:
        super().__init__(client, embedding, multimask_output=multimask_output, priority=priority)
        self._changed = threading.Condition()
        self._pending: tuple[int, Prompt] | None = None
        self._clicks = 0
        self._answer: tuple[int, Prediction | BaseException] | None = None
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name="sam-latest-click", daemon=True)
        self._worker.start()

    def click(self, prompt: Prompt) -> None:
        with self._changed:
            if self._pending is not None:
                self.superseded += 1  # never sent
            self._clicks += 1
            self._pending = (self._clicks, prompt)
            self._changed.notify_all()

    def latest(self, timeout: float | None = None) -> Prediction:
        """The answer to the newest click (raises its error, or TimeoutError)."""
        with self._changed:
            if not self._clicks:
                raise RuntimeError("LatestClickThread.latest() before any click()")
            if not self._changed.wait_for(
                lambda: self._answer is not None and self._answer[0] == self._clicks, timeout
            ):
                raise TimeoutError("no answer to the newest click yet")
            assert self._answer is not None
            result = self._answer[1]
        if isinstance(result, BaseException):
            raise result
        return result

    def _loop(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending is not None or self._closed)
                if self._closed:
                    return
                assert self._pending is not None
                number, prompt = self._pending
                self._pending = None
                self.sent += 1
            answer: Prediction | BaseException
            try:
                result = self.client.predict(
                    self.embedding, prompt, self.multimask_output, priority=self.priority
                )
                assert isinstance(result, Prediction)
                answer = result
            except Exception as exc:  # handed to latest()
                answer = exc
            with self._changed:
                if number != self._clicks:
                    self.superseded += 1  # a newer click arrived meanwhile
                self._answer = (number, answer)
                self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._worker.join()

    def __enter__(self) -> LatestClickThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
