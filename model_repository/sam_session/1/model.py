from sam_triton_server.models.session import TritonPythonModel  # noqa
