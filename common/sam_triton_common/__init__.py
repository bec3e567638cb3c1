"""What the SDK, the server-side models and the exporter share, and nothing else.

- :mod:`sam_triton_common.contract`: the served contract (model, tensor and file names,
  sizes, session-id rules, ``export.json``); dependency-free.
- :mod:`sam_triton_common.transforms`, :mod:`sam_triton_common.rle`,
  :mod:`sam_triton_common.amg`: numpy code both ends run (resizing, mask post-processing,
  RLE, the automatic-mask-generation core).
- :mod:`sam_triton_common.errors`: the root of the error hierarchy and the two errors the
  shared code raises.
- ``sam_triton_common.proto``: the automask messages, generated from
  proto/sam_triton_common/proto/automask.proto (``make proto``).

It imports none of the other sam-triton packages.
"""
