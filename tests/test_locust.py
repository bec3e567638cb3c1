"""The Locust user class (sam_triton_bench.locust_user) in Locust's distributed mode, headless,
against the served tiny-test model: a master and one worker, as separate processes, the way
a team spreads load over machines.

Locust's own statistics (its CSV) must count each stage under its own request type, with no
failures, and the server must have done that work: its encoder ran once per embed Locust
counted (each image is fresh content) and sam_session answered each click. Counts, never
timings; a request in flight when the run ends may be done by the server and not counted by
Locust, so the server's counts may exceed Locust's by at most one per user.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import sam_triton_bench
from PIL import Image

from tests.conftest import ServedTriton
from tests.helpers import communicate, free_ports

# Never imported here: importing Locust monkey-patches the whole process for gevent (and the
# module switches on gRPC's gevent mode), which would change every test after this one.
LOCUSTFILE = Path(sam_triton_bench.__file__).parent / "locust_user.py"
STAGES = ("embed", "click", "refine")
USERS = 2
CLICKS = 3


def success_count(served: ServedTriton, model: str) -> int:
    url = f"http://127.0.0.1:{served.http_port}/v2/models/{model}/stats"
    with urllib.request.urlopen(url, timeout=5) as response:
        stats = json.load(response)["model_stats"][0]
    return int(stats["inference_stats"]["success"]["count"])


def locust(*args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


GEVENT_CHECK = """
import sys, time
import numpy as np
import gevent
import sam_triton_bench.locust_user  # Locust patches the standard library; the module, gRPC
from sam_triton import SamClient

ticks = 0

def ticker():
    global ticks
    while True:
        gevent.sleep(0.005)
        ticks += 1

with SamClient(sys.argv[1], timeout=120) as client:
    client.server_ready()
    other = gevent.spawn(ticker)
    image = np.random.default_rng(int(time.time() * 1000)).integers(0, 256, (300, 400, 3), np.uint8)
    client.embed(image, session_id=f"gevent-{time.time()}")  # an encode: tens of milliseconds at least
    other.kill()
print(ticks)
"""


def test_a_users_grpc_call_lets_the_other_users_run(triton_server: ServedTriton) -> None:
    """Under Locust's gevent, a blocking gRPC call would stop every user of the worker for its
    whole duration: another greenlet must have run while an embed was in flight."""
    check = subprocess.run(
        [sys.executable, "-c", GEVENT_CHECK, triton_server.grpc_url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    assert int(check.stdout.split()[-1]) > 0


def stats_by_type(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {row["Type"]: row for row in csv.DictReader(f) if row["Name"] != "Aggregated"}


def small_images(directory: Path) -> Path:
    """Two small photos-to-be (the synthetic set's 1411 px images would make a worker slow to
    start on a busy machine, and the tiny model does not care)."""
    directory.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(120, 160), (200, 150)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(directory / f"{i}.png")
    return directory


def test_distributed_locust_run_reports_each_stage(triton_server: ServedTriton, tmp_path: Path) -> None:
    (master_port,) = free_ports(1)
    images = small_images(tmp_path / "images")
    encodes_before = success_count(triton_server, "sam_encoder")
    sessions_before = success_count(triton_server, "sam_session")
    master = locust(
        "--master",
        "--master-bind-host=127.0.0.1",
        f"--master-bind-port={master_port}",
        "--expect-workers=1",
        f"--users={USERS}",
        f"--spawn-rate={USERS}",
        "--run-time=8s",
        f"--host={triton_server.grpc_url}",
        f"--csv={tmp_path / 'run'}",
        # Options given to the master only: the worker must receive them.
        f"--sam-clicks={CLICKS}",
        "--sam-think-time=0.05",
        "--sam-refine-fraction=0.5",
        f"--sam-images={images}",
    )
    worker = locust("--worker", "--master-host=127.0.0.1", f"--master-port={master_port}")
    try:
        _, master_log = communicate(master, timeout=180)
        _, worker_log = communicate(worker, timeout=30)
    finally:
        for process in (master, worker):
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert master.returncode == 0, master_log[-6000:]
    assert worker.returncode == 0, worker_log[-6000:]

    stats = stats_by_type(tmp_path / "run_stats.csv")
    assert set(stats) == set(STAGES), stats
    assert all(row["Name"] == "sam_session" for row in stats.values())
    requests = {stage: int(row["Request Count"]) for stage, row in stats.items()}
    failures = {stage: int(row["Failure Count"]) for stage, row in stats.items()}
    assert failures == dict.fromkeys(STAGES, 0), master_log[-3000:]
    assert requests["embed"] >= USERS and requests["refine"] >= 1, requests
    # The worker ran the master's --sam-clicks: never more clicks than CLICKS per image.
    assert requests["click"] + requests["refine"] <= CLICKS * requests["embed"], requests
    # Masks came back: each click's response length is the bytes the server sent.
    assert float(stats["click"]["Average Content Size"]) > 0

    encodes = success_count(triton_server, "sam_encoder") - encodes_before
    assert requests["embed"] <= encodes <= requests["embed"] + USERS
    # sam_session: a lookup and an upload per embed, one request per click.
    clicks = requests["click"] + requests["refine"]
    served = success_count(triton_server, "sam_session") - sessions_before
    assert 2 * requests["embed"] + clicks <= served <= 2 * requests["embed"] + clicks + 2 * USERS
