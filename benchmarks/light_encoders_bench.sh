#!/usr/bin/env bash
# BENCHMARKS.md "Light encoders": opening the 1411x1411 photo (set_image) and a click, mobile_sam,
# efficientvit_sam_xl0 and vit_b from one repository and one server, the models' series
# alternated in rounds (see that section for the export and serve lines).
# Usage, from the repository root: benchmarks/light_encoders_bench.sh GRPC_URL REPOSITORY [OUT_DIR]
set -uxo pipefail
U=${1:?grpc url, e.g. 127.0.0.1:8001}
repo=${2:?the repository holding mobile_sam, efficientvit_sam_xl0 and vit_b}
out=${3:-/tmp/light_encoders_bench}
mkdir -p "$out"
bench() {  # NAME MODEL ARGS...: one bench command, its table in NAME.log
  local name=$1 model=$2
  shift 2
  .venv/bin/sam-triton bench --url "$U" --repository "$repo" --model "$model" --max-images 1 --no-plots \
    --output "$out/$name" "$@" > "$out/$name.log" 2>&1
}
for round in 1 2; do
  for m in mobile_sam efficientvit_sam_xl0 vit_b; do
    bench "encode_${m}_$round" $m --scenario encode --duration 45 --warmup 3
  done
done
for m in mobile_sam efficientvit_sam_xl0 vit_b; do
  bench "click_$m" $m --scenario click --duration 30 --warmup 3
done
# Each light model against its own package's predictor (same weights), rounds interleaved.
for m in mobile_sam efficientvit_sam_xl0; do
  bench "encode_${m}_reference" $m --scenario encode --duration 60 --warmup 3 --rounds 2 --baseline reference
done
