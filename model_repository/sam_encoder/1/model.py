from sam_triton_server.models.encoder import TritonPythonModel  # noqa
