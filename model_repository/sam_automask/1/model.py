from sam_triton_server.backend.models.automask import TritonPythonModel  # noqa
