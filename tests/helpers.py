"""Small utilities shared by the tests (ports, processes, polling)."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any


def free_ports(count: int) -> list[int]:
    """Ports the OS reports free right now (held open together so they differ)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def process_group(pgid: int) -> list[int]:
    """The live processes of a process group (a tritonserver's: its Python backend stubs)."""
    found = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True)
    return [pid for pid in map(int, found.stdout.split()) if pid_alive(pid)]


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "?")
    return state != "Z"


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def communicate(process: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """``process.communicate`` that kills the process when it does not end in time: a command
    left running (a 600 s bench) would load the shared test server for the tests after it."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise


def takes_ctrl_c() -> None:
    """``preexec_fn`` for a child a test will Ctrl-C (SIGINT): a suite started in the background
    (``make test &``, nohup) runs with SIGINT ignored, children inherit that, and Python then
    leaves it ignored, so the Ctrl-C a user's terminal would deliver never arrives."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def in_background(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``call`` in a thread; its result (or exception) lands in the list."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # reported by the caller's assertions
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome
