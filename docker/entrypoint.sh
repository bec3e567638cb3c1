#!/usr/bin/env bash
# Build (or reuse) the model repository from the mounted checkpoint, then become tritonserver.
# With --export-only it stops after the export (the Kubernetes init container, deploy/).
set -euo pipefail

if [[ ! -f "${CHECKPOINT}" ]]; then
    echo "sam-triton: checkpoint ${CHECKPOINT} not found; mount your SAM .pth file (see docker-compose.yml)" >&2
    exit 2
fi

verify_flag=()
[[ "${VERIFY}" == "0" ]] && verify_flag=(--no-verify)

sam-triton export \
    --model-type "${MODEL_TYPE}" \
    --checkpoint "${CHECKPOINT}" \
    --repository "${REPOSITORY}" \
    --target "${TARGET}" \
    --precision "${PRECISION}" \
    --if-changed \
    "${verify_flag[@]}"

[[ "${1:-}" == "--export-only" ]] && exit 0

# Extra arguments to the container go to tritonserver (e.g. --log-verbose=1).
exec tritonserver --model-repository="${REPOSITORY}" "$@"
