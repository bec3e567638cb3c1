"""How many sessions move to another replica when the replica count changes (deploy/README.md).

A model of Envoy's ring hash (source/extensions/load_balancing_policies/ring_hash): with
equal weights each host gets ceil(min_ring_size / hosts) points hashed from
"<address>_<i>", a request goes to the first point at or after the hash of its
``sam-session-id``. Envoy hashes with xxHash64; a 64-bit BLAKE2b stands in here (any
well-mixed 64-bit hash gives the same shares). Because the points per host shrink as hosts
are added, a few sessions also move between replicas that stay; the table counts them.

    .venv/bin/python benchmarks/ring_hash_moves.py --sessions 20000
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from sam_triton_server.launcher.envoy import MIN_RING_SIZE


def hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class Ring:
    def __init__(self, hosts: Sequence[str], min_ring_size: int = MIN_RING_SIZE) -> None:
        per_host = math.ceil(min_ring_size / len(hosts))
        points = sorted((hash64(f"{host}_{i}"), host) for host in hosts for i in range(per_host))
        self._hashes = [h for h, _ in points]
        self._hosts = [host for _, host in points]

    def host(self, session_id: str) -> str:
        index = bisect.bisect_left(self._hashes, hash64(session_id))
        return self._hosts[index % len(self._hosts)]


@dataclass(frozen=True)
class Moves:
    moved: float  # share of all sessions that land on another replica (one re-embed each)
    between_survivors: float  # of those, sessions moved between replicas present before and after


def moves(before: Sequence[str], after: Sequence[str], sessions: int) -> Moves:
    old, new = Ring(before), Ring(after)
    ids = [f"sha256:{i:064x}" for i in range(sessions)]
    changed = [(old.host(s), new.host(s)) for s in ids]
    moved = [pair for pair in changed if pair[0] != pair[1]]
    survivors = [(a, b) for a, b in moved if a in after and b in before]
    return Moves(len(moved) / sessions, len(survivors) / sessions)


def hosts(count: int) -> list[str]:
    # Pod IPs as the headless Service returns them, on Triton's gRPC port.
    return [f"10.0.{i // 250}.{i % 250 + 2}:8001" for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=20000)
    parser.add_argument("--max-replicas", type=int, default=8)
    args = parser.parse_args()
    print("| replicas | scale up N -> N+1: sessions moved (ideal 1/(N+1)) | lose 1 of N: moved (ideal 1/N) |")
    print("| --- | --- | --- |")
    for n in range(2, args.max_replicas + 1):
        up = moves(hosts(n), hosts(n + 1), args.sessions)
        down = moves(hosts(n), hosts(n)[1:], args.sessions)
        print(
            f"| {n} | {up.moved:.1%} ({1 / (n + 1):.1%}), {up.between_survivors:.1%} between old replicas "
            f"| {down.moved:.1%} ({1 / n:.1%}), {down.between_survivors:.1%} between survivors |"
        )


if __name__ == "__main__":
    main()
