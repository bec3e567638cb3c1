"""The permutation PyTorch's *unstable* CPU sort produces, reproduced without torch.

Why this exists: ``torchvision.ops.batched_nms`` on more than 1000 CPU boxes re-sorts the kept
indices with ``scores.sort(descending=True)`` (not stable). PyTorch implements that with
libstdc++'s ``std::sort`` (introsort) over (value, index) pairs, so equal scores come out in
a scrambled but deterministic order. The automatic mask generator feeds NMS many equal scores
(``1 / crop_area`` for every mask of a crop, 0/1 after small-region clean-up), and that order
decides later tie-breaks; to return the reference's records we must produce the same order.

What follows is an independent implementation of the libstdc++ algorithm (introsort with a
median-of-three pivot, depth limit ``2 * floor(log2 n)``, heap sort fallback, final insertion
sort with threshold 16) with the comparator PyTorch uses for descending sorts (NaN first, then
``a > b``). It runs in pure Python: it is only used on the few thousand kept boxes of one
NMS call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

_THRESHOLD = 16  # libstdc++'s _S_threshold


def _before(a: float, b: float) -> bool:
    """PyTorch's descending comparator: NaN sorts first, then larger values."""
    return (math.isnan(a) and not math.isnan(b)) or a > b


class _IntroSort:
    """State of one sort: ``keys`` and ``perm`` are permuted together, like the pair iterator."""

    def __init__(self, keys: Sequence[float]) -> None:
        self.keys = [float(k) for k in keys]
        self.perm = list(range(len(self.keys)))

    def _swap(self, i: int, j: int) -> None:
        self.keys[i], self.keys[j] = self.keys[j], self.keys[i]
        self.perm[i], self.perm[j] = self.perm[j], self.perm[i]

    def _set(self, dst: int, item: tuple[float, int]) -> None:
        self.keys[dst], self.perm[dst] = item

    def _get(self, src: int) -> tuple[float, int]:
        return self.keys[src], self.perm[src]

    def run(self) -> list[int]:
        n = len(self.keys)
        if n > 1:
            self._introsort_loop(0, n, 2 * (n.bit_length() - 1))
            self._final_insertion_sort(0, n)
        return self.perm

    def _introsort_loop(self, first: int, last: int, depth: int) -> None:
        while last - first > _THRESHOLD:
            if depth == 0:
                self._heap_sort(first, last)
                return
            depth -= 1
            self._median_to_first(first, first + 1, first + (last - first) // 2, last - 1)
            cut = self._partition(first + 1, last, first)
            self._introsort_loop(cut, last, depth)
            last = cut

    def _median_to_first(self, result: int, a: int, b: int, c: int) -> None:
        k = self.keys
        if _before(k[a], k[b]):
            if _before(k[b], k[c]):
                self._swap(result, b)
            elif _before(k[a], k[c]):
                self._swap(result, c)
            else:
                self._swap(result, a)
        elif _before(k[a], k[c]):
            self._swap(result, a)
        elif _before(k[b], k[c]):
            self._swap(result, c)
        else:
            self._swap(result, b)

    def _partition(self, first: int, last: int, pivot: int) -> int:
        k = self.keys
        while True:
            while _before(k[first], k[pivot]):
                first += 1
            last -= 1
            while _before(k[pivot], k[last]):
                last -= 1
            if not first < last:
                return first
            self._swap(first, last)
            first += 1

    def _final_insertion_sort(self, first: int, last: int) -> None:
        if last - first > _THRESHOLD:
            self._insertion_sort(first, first + _THRESHOLD)
            for i in range(first + _THRESHOLD, last):
                self._linear_insert(i)
        else:
            self._insertion_sort(first, last)

    def _insertion_sort(self, first: int, last: int) -> None:
        for i in range(first + 1, last):
            if _before(self.keys[i], self.keys[first]):
                item = self._get(i)
                for j in range(i, first, -1):
                    self._set(j, self._get(j - 1))
                self._set(first, item)
            else:
                self._linear_insert(i)

    def _linear_insert(self, last: int) -> None:
        item = self._get(last)
        prev = last - 1
        while _before(item[0], self.keys[prev]):
            self._set(last, self._get(prev))
            last = prev
            prev -= 1
        self._set(last, item)

    # -- heap sort fallback (std::make_heap + std::sort_heap) --------------------------------

    def _heap_sort(self, first: int, last: int) -> None:
        length = last - first
        if length >= 2:
            parent = (length - 2) // 2
            while True:
                self._adjust_heap(first, parent, length, self._get(first + parent))
                if parent == 0:
                    break
                parent -= 1
        while last - first > 1:
            last -= 1
            item = self._get(last)
            self._set(last, self._get(first))
            self._adjust_heap(first, 0, last - first, item)

    def _adjust_heap(self, first: int, hole: int, length: int, item: tuple[float, int]) -> None:
        top = hole
        child = hole
        while child < (length - 1) // 2:
            child = 2 * (child + 1)
            if _before(self.keys[first + child], self.keys[first + child - 1]):
                child -= 1
            self._set(first + hole, self._get(first + child))
            hole = child
        if length % 2 == 0 and child == (length - 2) // 2:
            child = 2 * (child + 1)
            self._set(first + hole, self._get(first + child - 1))
            hole = child - 1
        parent = (hole - 1) // 2
        while hole > top and _before(self.keys[first + parent], item[0]):
            self._set(first + hole, self._get(first + parent))
            hole = parent
            parent = (hole - 1) // 2
        self._set(first + hole, item)


def torch_unstable_argsort_descending(keys: Sequence[float]) -> list[int]:
    """Indices in the order ``torch.sort(torch.tensor(keys), descending=True)[1]`` gives on CPU."""
    return _IntroSort(keys).run()
