"""Server side: the tritonserver launcher and the Python-backend model implementations."""

import sys

# `import openvino` (the encoder's CPU runtime) otherwise starts OpenVINO's telemetry: it writes
# ~/intel/ and forks a process to send usage data, which on a server is unwanted and in bench
# made gRPC log "fork_posix.cc ... skipping fork() handlers". With the module unimportable,
# OpenVINO falls back to its own telemetry stub. Before any import of openvino, so here.
sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
