"""Server side: the tritonserver launcher and the Python-backend model implementations."""
