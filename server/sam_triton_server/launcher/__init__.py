"""The code that runs Triton: ``sam-triton serve`` (security, queue overrides, TensorRT plan
checks), the tritonserver process, and ``--replicas`` behind Envoy. Nothing here is loaded by
Triton itself."""
