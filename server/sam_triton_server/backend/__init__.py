"""The code that runs inside Triton: the Python-backend models (``models/``, loaded through the
one-line ``model.py`` shims of the model repository) and what they run on (ONNX Runtime and
OpenVINO sessions, the embedding cache, the click lane and embed pool, automatic masks, metrics).
torch is never imported here."""
