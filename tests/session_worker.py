"""Worker for the multi-process session test (test_session_e2e.py).

A module of its own, importing nothing heavy: ``spawn`` children import it, and they should
not pay for torch or segment_anything.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def embed_and_click(
    url: str, image: np.ndarray, clicks: list[tuple[float, float]], session_id: str | None
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Embed ``image`` with a client of this process's own, click each point, return
    (scores, low-res logits, packed masks) per click."""
    from sam_triton import Prompt, SamClient

    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    with SamClient(url, timeout=300) as client:
        emb = client.embed(image, session_id=session_id)
        assert emb.server_held
        for x, y in clicks:
            pred: Any = client.predict(emb, Prompt([[x, y]], [1]), low_res_logits=True)
            out.append((pred.scores, pred.low_res_logits, np.packbits(pred.masks)))
    return out
