"""Many users at once, on a real tritonserver (tiny-test): clicks never wait behind other
users' encodes or automatic masks, full queues refuse at once, expired and cancelled requests
are not computed, the newest click wins, and priorities order a shared queue.

The server runs with small bounds (``serve --queue`` overrides through an overlay of the
session's tiny repository): one embed worker, three embeds in the pool, eight requests per
priority level in ``sam_encoder``'s queue. "Long work" is a few batches of eight images sent
straight to ``sam_encoder`` (executions of its single instance), as many as keep it busy for
``BUSY_SECONDS`` on this machine (measured once per module): a fixed amount of work was once
over before a test had set up its scene on a faster machine. Assertions are about order and
server-side counts (Triton's per-model statistics), never absolute timings; tests whose
scene needs it check that the long work was still running when the scene was set.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from sam_triton import (
    AsyncSamClient,
    DeadlineExceededError,
    ImageEmbedding,
    LatestClick,
    LatestClickThread,
    Priority,
    Prompt,
    RemoteAutomaticMaskGenerator,
    SamClient,
    ServerOverloadedError,
)
from sam_triton._core import content_id
from sam_triton._tensors import build_infer_request
from sam_triton.proto.inference_pb2_grpc import GRPCInferenceServiceStub
from sam_triton.results import Prediction
from sam_triton_server.backend.metrics import EMBED_PENDING, REJECTIONS
from sam_triton_server.launcher.queues import overlay_repository

from tests.conftest import ServedTriton, start_triton
from tests.helpers import wait_until
from tests.test_metrics_e2e import scrape, value

ENCODER_QUEUE = 8
EMBED_QUEUE = 3
OVERRIDES = {"sam_encoder": ENCODER_QUEUE, "embed_workers": 1, "embed_queue": EMBED_QUEUE}
BIG = 1 << 28
BATCH = 8  # sam_encoder's max_batch_size
BUSY_SECONDS = 5.0
# Long batches wait in the FOREGROUND queue beside a test's own embeds (at most two).
MAX_LONG_BATCHES = ENCODER_QUEUE - 2


@pytest.fixture(scope="module")
def busy_server(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedTriton]:
    overlay = overlay_repository(tiny_repository, OVERRIDES, tmp_path_factory.mktemp("overlay") / "repo")
    served = start_triton(overlay)
    try:
        yield served
    finally:
        served.process.stop()


def image(seed: int, size: int = 1024) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def inference_stats(served: ServedTriton, model: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{served.http_port}/v2/models/{model}/stats"
    with urllib.request.urlopen(url, timeout=10) as response:
        stats: dict[str, Any] = json.load(response)["model_stats"][0]
    return stats


def executions(served: ServedTriton) -> int:
    """Batches sam_encoder has run so far."""
    return int(inference_stats(served, "sam_encoder")["execution_count"])


def encoded(served: ServedTriton) -> int:
    """Images sam_encoder has computed so far (warm-up included)."""
    return int(inference_stats(served, "sam_encoder")["inference_count"])


def assert_encoded_exactly(served: ServedTriton, expected: int) -> None:
    """sam_encoder computed exactly ``expected`` images, a request that was to be dropped but
    ran after all included. No wait for "a moment later": once sam_session's pool is idle, one
    last image sent at the lowest priority queues behind anything still waiting in
    sam_encoder and is answered after it, so the count then is final (less that image)."""
    wait_for(lambda: embeds_pending(served) == 0)
    last = RawEncoder(served)
    try:
        last.send(1, seed=9999, priority=Priority.BATCH).result()
    finally:
        last.close()
    # Triton records an execution just after its reply: wait for the last image's.
    wait_for(lambda: encoded(served) >= expected + 1)
    assert encoded(served) == expected + 1, inference_stats(served, "sam_encoder")["inference_stats"]


def queued(served: ServedTriton) -> float:
    """Requests waiting in sam_encoder's queue (Triton's gauge; the one running is not counted)."""
    return value(scrape(served.metrics_port), "nv_inference_pending_request_count", model="sam_encoder")


def embeds_pending(served: ServedTriton) -> float:
    """Embeds running or waiting in sam_session's pool (its metrics gauge)."""
    url = f"http://127.0.0.1:{served.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf'^{EMBED_PENDING}{{[^}}]*model="sam_session"[^}}]*}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


Rejected = dict[tuple[str, str], float]


def rejections(served: ServedTriton) -> Rejected:
    """``sam_rejections_total`` by (model, reason), the non-zero series only."""
    samples = scrape(served.metrics_port)
    found: Rejected = {}
    for (name, labels), count in samples.items():
        if name == REJECTIONS and count:
            label = dict(labels)
            found[label["model"], label["reason"]] = count
    return found


def rejected_since(served: ServedTriton, before: Rejected) -> Rejected:
    """What ``sam_rejections_total`` counted since ``before``, by (model, reason)."""
    now = rejections(served)
    return {key: now[key] - before.get(key, 0) for key in now if now[key] != before.get(key, 0)}


@dataclass
class LongWork:
    """Batches sent to sam_encoder that keep its one instance busy for a while."""

    futures: list[Future[Any]]

    @property
    def images(self) -> int:
        return BATCH * len(self.futures)

    def running(self) -> bool:
        return not self.futures[-1].done()

    def wait_queued_beside(self, served: ServedTriton, extra: int) -> None:
        """Until ``extra`` requests besides what is left of the long work (one batch of it
        runs, the rest waits) wait in sam_encoder's queue: a test's scene is set."""
        wait_for(lambda: queued(served) >= sum(not f.done() for f in self.futures) - 1 + extra)

    def result(self) -> None:
        for future in self.futures:
            future.result()


class RawEncoder:
    """Images straight to sam_encoder over raw gRPC, at a chosen priority."""

    def __init__(self, served: ServedTriton, batch_seconds: float = 0.0) -> None:
        self.served = served
        options = [("grpc.max_send_message_length", BIG), ("grpc.max_receive_message_length", BIG)]
        self.channel = grpc.insecure_channel(served.grpc_url, options=options)
        self.stub = GRPCInferenceServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.batch_seconds = batch_seconds

    def occupy(self, seed: int) -> LongWork:
        """Enough full batches to keep sam_encoder busy for about ``BUSY_SECONDS``."""
        # Two at least: a test may wait for one to end while its own request still waits.
        count = min(MAX_LONG_BATCHES, max(2, math.ceil(BUSY_SECONDS / self.batch_seconds)))
        work = LongWork([self.send(BATCH, seed=seed + BATCH * i) for i in range(count)])
        work.wait_queued_beside(self.served, 0)  # the first batch runs, the others wait
        return work

    def send(self, count: int, seed: int, priority: int = 0) -> Future[Any]:
        images = np.stack([image(seed + i) for i in range(count)])
        sizes = np.full((count, 2), 1024, np.int32)
        request = build_infer_request(
            "sam_encoder", {"image": images, "input_size": sizes}, ["image_embeddings"]
        )
        if priority:
            request.parameters["priority"].uint64_param = priority
        future: Future[Any] = self.stub.ModelInfer.future(request, timeout=300)
        return future

    def close(self) -> None:
        self.channel.close()


@pytest.fixture(scope="module")
def batch_seconds(busy_server: ServedTriton) -> float:
    """How long one full batch takes sam_encoder here (after a warm-up batch)."""
    encoder = RawEncoder(busy_server)
    try:
        encoder.send(BATCH, seed=0).result()
        start = time.monotonic()
        encoder.send(BATCH, seed=BATCH).result()
        return time.monotonic() - start
    finally:
        encoder.close()


@pytest.fixture()
def raw_encoder(busy_server: ServedTriton, batch_seconds: float) -> Iterator[RawEncoder]:
    encoder = RawEncoder(busy_server, batch_seconds)
    try:
        yield encoder
    finally:
        encoder.close()


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "server never reached the expected state"
        time.sleep(0.05)


CLICK = Prompt(point_coords=[[200, 300]], point_labels=[1])


def test_click_is_answered_while_encodes_and_an_automask_run(
    busy_server: ServedTriton, raw_encoder: RawEncoder
) -> None:
    done: dict[str, float] = {}
    with SamClient(busy_server.grpc_url, timeout=300) as client:
        held = client.embed(image(1, 640))
        long_work = raw_encoder.occupy(seed=100)
        long_work.futures[-1].add_done_callback(lambda _: done.setdefault("long work", time.monotonic()))

        def run(name: str, fn: Callable[[], object]) -> None:
            fn()
            done[name] = time.monotonic()

        generator = RemoteAutomaticMaskGenerator(client, points_per_side=4)
        jobs = [threading.Thread(target=run, args=("automask", lambda: generator.generate(image(2, 512))))]
        jobs += [
            threading.Thread(target=run, args=(f"embed {i}", lambda i=i: client.embed(image(10 + i))))
            for i in range(2)
        ]
        for job in jobs:
            job.start()
        prediction = client.predict(held, CLICK)
        done["click"] = time.monotonic()
        for job in jobs:
            job.join()
        long_work.result()
    assert prediction.masks.shape[1:] == (640, 640)
    others = {name: t for name, t in done.items() if name != "click"}
    assert all(done["click"] < t for t in others.values()), f"click finished after other work: {done}"


def test_a_full_embed_pool_refuses_at_once(busy_server: ServedTriton, raw_encoder: RawEncoder) -> None:
    """Each refusal comes back while the long work still holds the encoder ("at once": it
    waited for nothing), and ``sam_rejections_total{reason="overloaded"}`` counts exactly the
    refusals. Seen failing with the count in ``error_for`` removed."""
    rejected_before = rejections(busy_server)
    long_work = raw_encoder.occupy(seed=200)
    outcomes: list[tuple[str, float, bool]] = []
    with SamClient(busy_server.grpc_url, timeout=300, retries=0) as client:

        def embed(seed: int) -> None:
            try:
                client.embed(image(seed))
                outcomes.append(("ok", time.monotonic(), long_work.running()))
            except ServerOverloadedError as exc:
                assert "sam_session overloaded" in str(exc) and exc.code == "UNAVAILABLE"
                outcomes.append(("overloaded", time.monotonic(), long_work.running()))

        with ThreadPoolExecutor(EMBED_QUEUE + 3) as pool:
            list(pool.map(embed, range(300, 300 + EMBED_QUEUE + 3)))
        long_work.result()
        # The server keeps serving: the pool drained, a new embed is accepted.
        client.embed(image(399))
    refused = [(t, running) for kind, t, running in outcomes if kind == "overloaded"]
    accepted = [t for kind, t, _ in outcomes if kind == "ok"]
    assert len(refused) >= 3 and len(accepted) >= 1
    assert all(running for _, running in refused), "a refusal waited for the long work"
    assert max(t for t, _ in refused) < min(accepted), "a refusal waited for queued work"
    assert rejected_since(busy_server, rejected_before) == {("sam_session", "overloaded"): len(refused)}


def test_a_full_triton_queue_refuses_at_once(busy_server: ServedTriton, raw_encoder: RawEncoder) -> None:
    long_work = raw_encoder.occupy(seed=400)
    with (
        SamClient(busy_server.grpc_url, timeout=300, retries=0, server_embeddings=False) as client,
        ThreadPoolExecutor(ENCODER_QUEUE + 4) as pool,
    ):
        futures = [pool.submit(client.embed, image(500 + i)) for i in range(ENCODER_QUEUE + 4)]
        # Whether the long work still held the encoder when each call came back ("at once").
        early: dict[int, bool] = {}
        for i, future in enumerate(futures):
            future.add_done_callback(lambda _, i=i: early.setdefault(i, long_work.running()))
        errors = [f.exception() for f in futures]
    long_work.result()
    overloaded = [e for e in errors if isinstance(e, ServerOverloadedError)]
    assert len(overloaded) >= 4, errors
    assert "Exceeds maximum queue size" in str(overloaded[0])
    assert all(early[i] for i, e in enumerate(errors) if e is not None), "a refusal waited for the long work"


def test_expired_requests_are_not_executed(busy_server: ServedTriton, raw_encoder: RawEncoder) -> None:
    """Also: the embed that expired in sam_session's pool moves
    ``sam_rejections_total{reason="expired"}`` by one, and nothing else; the one that expired in
    sam_encoder's Triton queue is Triton's to count. Seen failing with the count in ``error_for``
    removed."""
    before = encoded(busy_server)
    rejected_before = rejections(busy_server)
    long_work = raw_encoder.occupy(seed=600)
    with (
        SamClient(busy_server.grpc_url, timeout=300) as patient,
        SamClient(busy_server.grpc_url, timeout=0.5, retries=0, server_embeddings=False) as hasty_direct,
        SamClient(busy_server.grpc_url, timeout=1.0, retries=0) as hasty_session,
    ):
        # The one embed worker waits in sam_encoder's queue behind the long work ...
        occupying = threading.Thread(target=patient.embed, args=(image(800),), kwargs={"session_id": "s800"})
        occupying.start()
        wait_for(lambda: embeds_pending(busy_server) >= 1)
        # ... so these expire: one in sam_encoder's queue, one in sam_session's embed pool. That
        # one rebinds the patient's session id, so it waits for the patient's encode whatever the
        # pool expects of the backlog (a new image could be refused at once, see the last test).
        with pytest.raises(DeadlineExceededError):
            hasty_direct.embed(image(801))
        assert long_work.running(), "the long work ended too soon: raise BUSY_SECONDS"
        with pytest.raises(DeadlineExceededError):
            hasty_session.embed(image(802), session_id="s800")
        long_work.result()
        occupying.join()
    assert_encoded_exactly(busy_server, before + long_work.images + 1)  # the long work and the patient embed
    # The pool answers the expired embed once the patient's encode it followed has landed.
    expired = {("sam_session", "expired"): 1}
    wait_until(lambda: rejected_since(busy_server, rejected_before) == expired, timeout=30)
    assert rejected_since(busy_server, rejected_before) == expired


def test_cancelling_an_async_call_cancels_the_rpc(busy_server: ServedTriton, raw_encoder: RawEncoder) -> None:
    before = encoded(busy_server)
    long_work = raw_encoder.occupy(seed=900)

    async def cancel_queued_embed() -> None:
        async with AsyncSamClient(busy_server.grpc_url, server_embeddings=False) as client:
            task = asyncio.ensure_future(client.embed(image(901)))
            # sent, and waiting in sam_encoder's queue (polled off the event loop, which sends it)
            await asyncio.to_thread(long_work.wait_queued_beside, busy_server, 1)
            # ... while sam_encoder finishes a batch of the long work, as a user's queued call
            # would: a cancel sent the moment a request is queued was twice missed by Triton
            # (the request ran after all); one sent 0.5 s later never was.
            executed = executions(busy_server)
            await asyncio.to_thread(wait_for, lambda: executions(busy_server) > executed)
            assert long_work.running(), "the long work ended too soon: raise BUSY_SECONDS"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert task.cancelled()

    asyncio.run(cancel_queued_embed())
    long_work.result()
    assert_encoded_exactly(busy_server, before + long_work.images)


def test_latest_click_wins(busy_server: ServedTriton) -> None:
    points = [[[100 + 20 * i, 100]] for i in range(8)]

    async def drag() -> tuple[Any, Any, LatestClick]:
        async with AsyncSamClient(busy_server.grpc_url) as client:
            held = await client.embed(image(1000, 512))
            clicks = LatestClick(client, held)
            for point in points:
                clicks.click(Prompt(point_coords=point, point_labels=[1]))
                await asyncio.sleep(0)
            newest = await clicks.latest()
            alone = await client.predict(held, Prompt(point_coords=points[-1], point_labels=[1]))
            return newest, alone, clicks

    newest, alone, clicks = asyncio.run(drag())
    np.testing.assert_allclose(newest.scores, alone.scores, atol=1e-5)
    np.testing.assert_array_equal(newest.masks, alone.masks)
    assert clicks.sent == len(points) and clicks.superseded == len(points) - 1


def session_requests(server: ServedTriton) -> int:
    """Requests sam_session answered (success or error), by Triton's own statistics."""
    import tritonclient.grpc as triton_grpc

    with triton_grpc.InferenceServerClient(server.grpc_url) as stock:
        stats = stock.get_inference_statistics("sam_session", as_json=True)["model_stats"][0]
    counts = stats["inference_stats"]
    return sum(int(counts[kind].get("count", 0)) for kind in ("success", "fail"))


def test_superseded_clicks_waiting_in_the_click_lane_are_not_decoded(busy_server: ServedTriton) -> None:
    """A drag's clicks that reached sam_session and then were cancelled by the next click
    (LatestClick) are skipped when their turn comes: decoded clicks fall short of the requests
    the model answered. (Without the lane's cancellation check every one is decoded.) The lane
    is kept busy by heavy calls ahead of the drag; a run is judged only if one of them was still
    unanswered once the drag's last click was sent, and made again with twice the heavy calls
    otherwise (CI once had its one heavy call answered before the clicks arrived)."""
    decoded = "sam_click_duration_seconds_count"
    heavy = [
        Prompt(point_coords=[[10 + 7 * i, 20 + 5 * i]], point_labels=[1], mask_input=np.ones((1, 256, 256)))
        for i in range(64)
    ]

    async def drag(heavy_calls: int) -> tuple[int, float, bool]:
        async with AsyncSamClient(busy_server.grpc_url) as client:
            held = await client.embed(image(1002, 512))
            requests_before = session_requests(busy_server)
            decoded_before = value(scrape(busy_server.metrics_port), decoded, model="sam_session")
            busy = [asyncio.ensure_future(client.predict(held, heavy)) for _ in range(heavy_calls)]
            await asyncio.sleep(0.005)
            clicks = LatestClick(client, held)
            for i in range(8):
                clicks.click(Prompt(point_coords=[[100 + 20 * i, 100]], point_labels=[1]))
                await asyncio.sleep(0.005)  # long enough for each click to be sent
            waited = not all(call.done() for call in busy)
            await clicks.latest()  # the lane is FIFO: every click before it is settled
            await asyncio.gather(*busy)
        requests = session_requests(busy_server) - requests_before - heavy_calls
        decodes = value(scrape(busy_server.metrics_port), decoded, model="sam_session") - decoded_before
        return requests, decodes - heavy_calls, waited

    for heavy_calls in (1, 2, 4):
        requests, decodes, waited = asyncio.run(drag(heavy_calls))
        if waited:
            break
    assert waited, "the heavy calls were answered before the drag's clicks were sent"
    assert requests >= 3, f"only {requests} of the drag's clicks reached the server"
    assert 1 <= decodes < requests, f"{decodes:g} of the {requests} clicks that arrived were decoded"


def test_priorities_order_a_shared_queue(busy_server: ServedTriton, raw_encoder: RawEncoder) -> None:
    """Behind long work, two full BATCH-priority batches queue first and one INTERACTIVE encode
    after them: it runs as soon as the instance is free, before both (in arrival order it
    would run last). Full batches leave the batcher no room to put it in one of theirs, so
    "before" is a whole execution earlier, not an order of replies within one batch."""
    long_work = raw_encoder.occupy(seed=1100)
    finished: dict[str, float] = {}
    low = [raw_encoder.send(BATCH, seed=1200 + BATCH * i, priority=Priority.BATCH) for i in range(2)]
    long_work.wait_queued_beside(busy_server, len(low))  # all queued before the urgent one is sent
    urgent = raw_encoder.send(1, seed=1300, priority=Priority.INTERACTIVE)
    long_work.wait_queued_beside(busy_server, len(low) + 1)
    assert long_work.running(), "the long work ended too soon: raise BUSY_SECONDS"
    for i, future in enumerate(low):
        future.add_done_callback(lambda _, i=i: finished.setdefault(f"low {i}", time.monotonic()))
    urgent.add_done_callback(lambda _: finished.setdefault("urgent", time.monotonic()))
    for future in [urgent, *low]:
        future.result()
    long_work.result()
    assert finished["urgent"] < min(t for name, t in finished.items() if name != "urgent"), finished


def test_latest_click_wins_for_the_blocking_client(busy_server: ServedTriton) -> None:
    points = [[[100 + 20 * i, 120]] for i in range(8)]
    with SamClient(busy_server.grpc_url) as client:
        held = client.embed(image(1001, 512))
        with LatestClickThread(client, held) as clicks:
            for point in points:
                clicks.click(Prompt(point_coords=point, point_labels=[1]))
            newest = clicks.latest(timeout=60)
            assert clicks.sent + clicks.superseded >= len(points) and clicks.sent < len(points)
        alone = client.predict(held, Prompt(point_coords=points[-1], point_labels=[1]))
    np.testing.assert_allclose(newest.scores, alone.scores, atol=1e-5)
    np.testing.assert_array_equal(newest.masks, alone.masks)


def test_an_embed_that_could_not_start_before_its_deadline_is_refused_at_once(
    busy_server: ServedTriton, raw_encoder: RawEncoder
) -> None:
    """Once sam_session has timed an encode held up behind long work, an embed whose deadline
    is nearer than the encodes ahead of it is refused at once, not queued and then dropped;
    ``sam_rejections_total{reason="overloaded"}`` counts it (seen failing with that count
    removed)."""
    rejected_before = rejections(busy_server)
    with SamClient(busy_server.grpc_url, timeout=300) as patient:
        long_work = raw_encoder.occupy(seed=1400)
        started = time.monotonic()
        patient.embed(image(1450))  # its encode waits for the long work: a long one, timed
        held_up = time.monotonic() - started
        long_work.result()
        assert held_up >= 1.5, "the long work ended too soon: raise BUSY_SECONDS"

        # The pool's running mean weighs its newest encode 0.3 (whatever the module ran
        # before), so with two embeds ahead the wait it estimates exceeds 0.6 x held_up. The
        # hasty deadline sits halfway between that and no time at all: its refusal has
        # 0.35 x held_up (>= 0.5 s) to come back, and the estimate 0.25 x held_up of slack
        # (one embed ahead and 0.2 x held_up once failed in CI: the refusal's round trip on a
        # busy machine took longer than the deadline). Not a fixed deadline: a fast run of the
        # long work once left the estimate under it.
        hasty_deadline = 0.35 * held_up
        before = encoded(busy_server)
        long_work = raw_encoder.occupy(seed=1500)
        occupying = [threading.Thread(target=patient.embed, args=(image(1550 + i),)) for i in range(2)]
        for thread in occupying:
            thread.start()
        wait_for(lambda: embeds_pending(busy_server) >= 2)
        with SamClient(busy_server.grpc_url, timeout=hasty_deadline, retries=0) as hasty:
            hasty.wait_until_ready()  # connected before its deadline counts
            with pytest.raises(ServerOverloadedError, match="the caller's deadline leaves"):
                hasty.embed(image(1552), session_id="hasty")  # a named id: no lookup first
        assert long_work.running(), "the long work ended too soon: raise BUSY_SECONDS"
        long_work.result()
        for thread in occupying:
            thread.join()
    assert_encoded_exactly(busy_server, before + long_work.images + 2)  # the long work and the patient embeds
    assert rejected_since(busy_server, rejected_before) == {("sam_session", "overloaded"): 1}


def test_two_embeds_of_one_image_and_a_racing_click_share_one_encode(
    busy_server: ServedTriton, raw_encoder: RawEncoder
) -> None:
    """While an image's encode waits behind long work, a second user's embed of the same image
    and a click on it (a handle with no image, so a miss could not be hidden by a re-embed)
    follow that encode: both are answered, the second embed uploads nothing, and sam_encoder
    computes the image once. Seen failing with ``EmbedPool.follow`` made to return False (the
    lookup and the click then no longer wait behind the encode)."""
    picture = image(1600, 512)
    prompt = Prompt(point_coords=[[100, 200]], point_labels=[1])
    before = encoded(busy_server)
    long_work = raw_encoder.occupy(seed=1610)
    with (
        SamClient(busy_server.grpc_url, timeout=300) as first,
        SamClient(busy_server.grpc_url, timeout=300) as second,
        ThreadPoolExecutor(3) as pool,
    ):
        embedded = pool.submit(first.embed, picture)
        wait_for(lambda: embeds_pending(busy_server) >= 1)  # its encode is in flight
        again = pool.submit(second.embed, picture.copy())
        handle = ImageEmbedding(None, (512, 512), (1024, 1024), content_id(picture))
        clicked = pool.submit(second.predict, handle, prompt)
        # The lookup and the click wait in the pool behind the encode (followers count there).
        wait_for(lambda: embeds_pending(busy_server) >= 3)
        assert long_work.running(), "the long work ended too soon: raise BUSY_SECONDS"
        held, shared, racing = embedded.result(), again.result(), clicked.result()
        long_work.result()
        assert held.from_cache is False and shared.from_cache is True
        assert held.session_id == shared.session_id == handle.session_id
        alone = first.predict(held, prompt)
    assert isinstance(racing, Prediction) and isinstance(alone, Prediction)
    np.testing.assert_array_equal(racing.masks, alone.masks)
    assert_encoded_exactly(busy_server, before + long_work.images + 1)
