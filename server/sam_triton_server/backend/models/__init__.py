"""Python-backend models for the ``python-onnxruntime`` target (loaded through the 1-line
``model.py`` shims in the model repository). They run the exported ONNX files with
onnxruntime; torch is never imported on the server side."""
