"""Re-export of :mod:`sam_triton_common.transforms`, shared with the server-side models."""

from sam_triton_common.transforms import *  # noqa: F403
