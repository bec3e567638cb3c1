"""Re-export of :mod:`sam_triton_common.rle`, shared with the server-side models."""

from sam_triton_common.rle import *  # noqa: F403
