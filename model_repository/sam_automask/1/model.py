from sam_triton_server.models.automask import TritonPythonModel  # noqa
