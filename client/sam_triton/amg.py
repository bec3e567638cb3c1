"""Re-export of :mod:`sam_triton_common.amg`, shared with the server-side models."""

from sam_triton_common.amg import *  # noqa: F403
