#!/usr/bin/env bash
# The "Many users at once" rows of BENCHMARKS.md, in one run against one served repository:
#   1. one user clicking (short think time) on an idle server, with two users embedding new
#      images, and with an automatic-mask job running;
#   2. the session scenario (embed a fresh image, then clicks, some refined) at 1, 4, 16 users;
#   3. a flood: 64 clients uploading 1024x1024 images while one user clicks, with the
#      server's resident memory (tritonserver + stubs) sampled throughout.
# Usage, from the repository root (PHASES: a subset of "clicker sessions flood" to run):
#   [PHASES=flood] benchmarks/many_users.sh REPOSITORY OUT_DIR [GRPC_PORT] [SECONDS]
set -euo pipefail
repository=${1:?repository}
out=${2:?output folder}
port=${3:-18801}
seconds=${4:-60}
phases=" ${PHASES:-clicker sessions flood} "
cli=.venv/bin/sam-triton
py=.venv/bin/python
url=127.0.0.1:${port}
mkdir -p "$out"

$cli serve --repository "$repository" --grpc-port "$port" --http-port $((port + 1)) \
    --metrics-port $((port + 2)) --quiet > "$out/serve.log" 2>&1 &
serve_pid=$!
trap 'kill -TERM $serve_pid 2>/dev/null; wait $serve_pid 2>/dev/null || true' EXIT
until grep -q READY "$out/serve.log"; do
    kill -0 $serve_pid 2>/dev/null || { cat "$out/serve.log"; exit 1; }
    sleep 2
done
triton_pid=$(pgrep -P $serve_pid -o tritonserver)

bench() {  # NAME ARGS...: one session-scenario run into $out/NAME
    local name=$1; shift
    echo "== $name"
    $cli bench --url "$url" --scenario session --duration "$seconds" --warmup 5 --no-progress \
        --output "$out/$name" "$@" > "$out/$name.txt" 2>&1 || { cat "$out/$name.txt"; return 1; }
}

clicker=(--users 1 --clicks 40 --think-time 0.2 --refine-fraction 0)
if [[ $phases == *" clicker "* ]]; then
    bench click-idle "${clicker[@]}"
    bench click-2-embedders "${clicker[@]}" --background-embedders 2
    bench click-automask "${clicker[@]}" --background-automask 1 --points-per-side 16
fi

if [[ $phases == *" sessions "* ]]; then
    for users in ${SESSION_USERS:-1 4 16}; do
        bench "session-$users-users" --users "$users" --clicks 8 --think-time 0.5 --refine-fraction 0.25
    done
fi

if [[ $phases == *" flood "* ]]; then
    flood_images="$out/flood-images"
    mkdir -p "$flood_images"
    $py -c "
import numpy as np, sys
from PIL import Image
rng = np.random.default_rng(0)
for i in range(4):
    Image.fromarray(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)).save(f'{sys.argv[1]}/flood-{i}.png')
" "$flood_images"
    $py benchmarks/process_rss.py --pid "$triton_pid" --duration $((seconds + 40)) \
        --output "$out/flood-rss.csv" > "$out/flood-rss.txt" &
    rss_pid=$!
    # The clicking user holds its embedding before the flood starts (its warm-up), then clicks
    # through it; the flood is a second client process: 64 uploads in flight, each with a 30 s
    # deadline, so an upload the server keeps refusing ends as a counted rejection.
    bench flood-64-clicks "${clicker[@]}" --clicks 100000 --warmup 20 &
    click_pid=$!
    sleep 15
    echo "== flood-64-uploads"
    $cli bench --url "$url" --scenario encode --concurrency 64 --duration "$seconds" --warmup 0 \
        --images "$flood_images" --timeout 30 --no-progress --output "$out/flood-64-uploads" \
        > "$out/flood-64-uploads.txt" 2>&1 || cat "$out/flood-64-uploads.txt"
    wait $click_pid
    wait $rss_pid
    cat "$out/flood-rss.txt"
    sed -n '/^run /,$p' "$out/flood-64-uploads.txt" | head -5
    kill -0 "$triton_pid" && echo "tritonserver still up after the flood"
fi

$py - "$out" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"{'run':22} {'stage':17} {'ok':>5} {'rej':>5} {'fail':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'max ms':>9}")
for run in sorted(p for p in out.iterdir() if (p / "results.json").exists()):
    results = json.loads((run / "results.json").read_text())
    if "session" not in results:
        continue
    session = results["session"]
    for stage, r in session["stages"].items():
        lat = r["latency_ms"]
        cells = [f"{lat[k]:9.0f}" if lat[k] is not None else f"{'-':>9}" for k in ("p50", "p90", "p99", "max")]
        print(f"{run.name:22} {stage:17} {r['ok']:5d} {r['rejected']:5d} {r['failed']:5d} {' '.join(cells)}")
    cache = session["cache"]
    print(f"{run.name:22} embeds {cache['embeds']}, cache hits {cache['hits']}")
EOF
