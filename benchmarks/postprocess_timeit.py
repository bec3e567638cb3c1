"""timeit: client mask upscaling of 3 masks, before (dense matmuls) vs now (banded), vs the reference.

    .venv/bin/python benchmarks/postprocess_timeit.py  # from the repository root
"""

import timeit

import numpy as np
import torch
from sam_triton_common import transforms as T

F = torch.nn.functional


def reference(low, input_size, original_size):  # Sam.postprocess_masks, then > mask_threshold
    x = F.interpolate(torch.from_numpy(low)[None], (1024, 1024), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    return F.interpolate(x, original_size, mode="bilinear", align_corners=False)[0] > 0


def dense(low, input_size, original_size):  # the client's previous postprocess_masks
    rows = T._axis_matrix(input_size[0], original_size[0])
    cols = T._axis_matrix(input_size[1], original_size[1])
    return np.matmul(np.matmul(rows, low), cols.T)


low = (np.random.default_rng(0).standard_normal((3, 256, 256)) * 8).astype(np.float32)
print(f"torch threads {torch.get_num_threads()}; best of 5 repeats x 10 calls, ms per call (3 masks)")
for h, w in [(1411, 1411), (1500, 2000)]:
    ins = T.preprocess_shape(h, w)
    cases = {
        "reference Sam.postprocess_masks > 0": lambda: reference(low, ins, (h, w)),
        "before: dense logits": lambda: dense(low, ins, (h, w)),
        "before: dense logits > 0": lambda: dense(low, ins, (h, w)) > 0,
        "now: postprocess_masks (logits)": lambda: T.postprocess_masks(low, ins, (h, w)),
        "now: postprocess_to_masks (bool)": lambda: T.postprocess_to_masks(low, ins, (h, w)),
    }
    print(f"{h}x{w}")
    for name, fn in cases.items():
        fn()
        best = min(timeit.repeat(fn, number=10, repeat=5)) / 10 * 1e3
        print(f"  {name:38s} {best:7.2f} ms")
