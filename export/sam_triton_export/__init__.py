"""Build SAM from a checkpoint, export ONNX/TensorRT, write and verify a Triton repository."""
