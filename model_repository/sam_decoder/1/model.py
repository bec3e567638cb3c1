from sam_triton_server.models.decoder import TritonPythonModel  # noqa
