from sam_triton_server.backend.models.session import TritonPythonModel  # noqa
