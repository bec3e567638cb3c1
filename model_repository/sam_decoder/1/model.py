from sam_triton_server.backend.models.decoder import TritonPythonModel  # noqa
