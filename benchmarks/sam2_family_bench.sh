#!/usr/bin/env bash
# BENCHMARKS.md "sam2.1_hiera_tiny, sam2.1_hiera_base_plus and vit_b from one repository": the bench
# commands against one server serving the three models (see that section for the export and serve lines).
# Usage, from the repository root: benchmarks/sam2_family_bench.sh GRPC_URL [OUT_DIR]
set -euxo pipefail
U=${1:?grpc url, e.g. 127.0.0.1:8001}
out=${2:-/tmp/fam_bench}
mkdir -p "$out"
for m in tiny base_plus vit_b; do
  .venv/bin/sam-triton bench --url $U --repository /tmp/fam --model $m --scenario click --duration 30 --warmup 5 --rounds 3 --max-images 1 --baseline reference --output $out/click_$m > $out/click_$m.log 2>&1
done
for m in tiny base_plus vit_b; do
  .venv/bin/sam-triton bench --url $U --repository /tmp/fam --model $m --scenario encode --duration 40 --warmup 5 --rounds 2 --baseline reference --output $out/encode_$m > $out/encode_$m.log 2>&1
done
