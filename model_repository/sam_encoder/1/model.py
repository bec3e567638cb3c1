from sam_triton_server.backend.models.encoder import TritonPythonModel  # noqa
