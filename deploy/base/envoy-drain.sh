#!/bin/bash
# preStop hook of the Envoy pods (envoy.yaml). Kubernetes sends SIGTERM when it returns, and
# Envoy exits on SIGTERM at once, cutting the calls in flight; so drain it first through its
# admin interface (localhost only; the envoyproxy/envoy image has bash but no curl):
#   - fail its health check: /healthz answers 503, the pod leaves the Service;
#   - drain the listener: every client connection is told to go (HTTP/2 GOAWAY, so clients
#     reconnect through the Service to another Envoy) and the listener closes after
#     --drain-time-s; calls in flight go on;
#   - return once MIN_S seconds have passed and no call is in flight, or after MAX_S.
# Usage: envoy-drain.sh [ADMIN_PORT [MIN_S [MAX_S]]]   (tests/test_envoy_drain.py runs it)
set -u
port=${1:-9901}
min_s=${2:-5}
max_s=${3:-280}

admin() { # METHOD PATH: the response body on stdout; fails when Envoy does not answer
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf '%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' \
        "$1" "$2" >&3
    local response
    response=$(cat <&3)
    exec 3<&-
    printf '%s\n' "${response#*$'\r\n\r\n'}"
}

admin POST /healthcheck/fail >/dev/null || exit 0 # no Envoy: nothing to drain
admin POST '/drain_listeners?graceful&skip_exit' >/dev/null || exit 0
start=$SECONDS
while ((SECONDS - start < max_s)); do
    stats=$(admin GET '/stats?filter=sam_triton.downstream_rq_active') || exit 0
    if [[ $stats =~ http\.sam_triton\.downstream_rq_active:\ ([0-9]+) ]] &&
        ((BASH_REMATCH[1] == 0 && SECONDS - start >= min_s)); then
        exit 0
    fi
    sleep 0.5
done
