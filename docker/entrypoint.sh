#!/usr/bin/env bash
# Build (or reuse) the model repository from the mounted checkpoint, then become tritonserver.
# With --export-only it stops after the export (the Kubernetes init container, deploy/).
set -euo pipefail

verify_flag=()
[[ "${VERIFY}" == "0" ]] && verify_flag=(--no-verify)

# export_model MODEL_TYPE CHECKPOINT [NAME]: one model into the repository (under NAME beside
# the others there, when given), skipped when it already holds this exact export.
export_model() {
    local model_type=$1 checkpoint=$2 name_flag=()
    [[ -n "${3:-}" ]] && name_flag=(--name "$3")
    if [[ ! -f "${checkpoint}" ]]; then
        echo "sam-triton: checkpoint ${checkpoint} not found; mount your SAM .pth / SAM 2 .pt file (see docker-compose.yml)" >&2
        exit 2
    fi
    # As PID 1 (a Kubernetes container has no init) bash gets no SIGTERM it has no handler for,
    # and it would not run one before a foreground child exits: the export (minutes) runs in
    # the background and a stop is passed on to it, so `docker stop` or a pod deletion stops it now.
    sam-triton export \
        --model-type "${model_type}" \
        --checkpoint "${checkpoint}" \
        --repository "${REPOSITORY}" \
        --target "${TARGET}" \
        --precision "${PRECISION}" \
        --if-changed \
        "${name_flag[@]}" \
        "${verify_flag[@]}" &
    export_pid=$!
    trap 'kill -TERM "${export_pid}" 2>/dev/null || true' TERM INT
    status=0
    wait "${export_pid}" || status=$?
    # A signal ends `wait` early (status > 128); the export may still be exiting.
    while kill -0 "${export_pid}" 2>/dev/null; do wait "${export_pid}" || status=$?; done
    trap - TERM INT
    (( status == 0 )) || exit "${status}"
}

# One model (MODEL_TYPE + CHECKPOINT; MODEL_NAME names it), or several in one repository:
# MODELS="NAME=MODEL_TYPE:CHECKPOINT ..." (clients choose one with model=NAME / --model NAME).
if [[ -n "${MODELS:-}" ]]; then
    for entry in ${MODELS}; do
        if [[ "${entry}" != ?*=?*:?* ]]; then
            echo "sam-triton: MODELS entry '${entry}': expected NAME=MODEL_TYPE:CHECKPOINT" >&2
            exit 2
        fi
        spec=${entry#*=}
        export_model "${spec%%:*}" "${spec#*:}" "${entry%%=*}"
    done
else
    export_model "${MODEL_TYPE}" "${CHECKPOINT}" "${MODEL_NAME:-}"
fi

[[ "${1:-}" == "--export-only" ]] && exit 0

# Serve through `sam-triton serve` (the NGC tritonserver on PATH): its TLS, API-key and
# drain settings, and its refusal to expose plaintext without a key.
# TLS_CERT/TLS_KEY[/TLS_CLIENT_CA]: PEM paths inside the container (mount them read-only);
# API_KEY (or SAM_TRITON_API_KEY): clients send it as the `sam-api-key` header.
serve_args=(--repository "${REPOSITORY}" --host 0.0.0.0 --exit-timeout "${EXIT_TIMEOUT}")
if [[ -n "${TLS_CERT:-}" || -n "${TLS_KEY:-}" ]]; then
    serve_args+=(--tls-cert "${TLS_CERT:?TLS_CERT and TLS_KEY go together}" --tls-key "${TLS_KEY:?TLS_CERT and TLS_KEY go together}")
fi
[[ -n "${TLS_CLIENT_CA:-}" ]] && serve_args+=(--tls-client-ca "${TLS_CLIENT_CA}")
export SAM_TRITON_API_KEY="${API_KEY:-${SAM_TRITON_API_KEY:-}}"
# Inside the container 0.0.0.0 is the only useful address; the published ports decide who
# can connect. Plaintext without a key is allowed when they are published on this machine
# only (PUBLISHED_HOST, compose's HOST) or on explicit request (ALLOW_INSECURE=1).
case "${PUBLISHED_HOST:-}" in
    127.* | localhost | ::1) serve_args+=(--allow-insecure) ;;
    *) [[ "${ALLOW_INSECURE}" == "1" ]] && serve_args+=(--allow-insecure) ;;
esac

# Extra arguments to the container go to `sam-triton serve` (e.g. --log-verbose 1).
exec sam-triton serve "${serve_args[@]}" "$@"
