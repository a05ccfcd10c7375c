#!/usr/bin/env bash
# One device call of the H200 campaign (issue 14), run from a folder holding simkv/ and data/
# (the Azure 2023 trace CSVs): `bash run_h200.sh PART` where PART is
#   1: GPU 0 calibration then Llama-3.1-8B; GPU 1 Qwen2.5-7B then Qwen2.5-14B (nvidia-h200-x2)
#   2: GPU 0 Mixtral-8x7B; GPU 1 Qwen2.5-14B (again, whole)
#   3: Llama-3.1-70B with TP=2 on both GPUs
# Everything lands in $OUT/h200_part<PART>.tar.gz (raw CSVs, logs, environment). Each engine
# process has a deadline after which it starts no new stream, so the call ends inside the
# device's 10-minute limit with whatever finished.
set -u
PART=${1:?part}
W=/tmp/h200_campaign
mkdir -p "$W"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
T0=$(date +%s)
left() { echo $(( $1 - ($(date +%s) - T0) )); }
{
  date -u; nvidia-smi; nvidia-smi topo -m
  python3 -c 'import torch, transformers, triton; print(torch.__version__, transformers.__version__, triton.__version__, torch.cuda.device_count())'
} > "$W/environment_part$PART.txt" 2>&1

shape() {  # GPU SHAPE PLAN DEADLINE_S [extra args]
  local gpu=$1 name=$2 plan=$3 deadline=$4; shift 4
  CUDA_VISIBLE_DEVICES=$gpu timeout $((deadline + 45)) python3 -m simkv.validation.hf_campaign \
    --shape "$name" --out "$W/$name" --plan "$plan" --reps 2 --data data \
    --precapture 30 --deadline "$deadline" "$@" > "$W/$name.log" 2>&1
  echo "$name exit $? after $(( $(date +%s) - T0 )) s" >> "$W/summary.txt"
}

if [ "$PART" = 1 ]; then
  (
    CUDA_VISIBLE_DEVICES=0 timeout 200 python3 -m simkv.calibration.run --out "$W/calibration" \
      > "$W/calibration.log" 2>&1
    echo "calibration exit $? after $(( $(date +%s) - T0 )) s" >> "$W/summary.txt"
    shape 0 llama3_8b "conv:0.3,0.8,2;code:1.5" "$(left 500)"
  ) &
  (
    shape 1 qwen2_5_7b "conv:0.3,0.8,2;burst:1" 300
    shape 1 qwen2_5_14b "conv:0.3,0.8,2" "$(left 500)"
  ) &
  wait
elif [ "$PART" = 2 ]; then
  shape 0 mixtral_8x7b "conv:0.3,0.8,2" 470 --num-blocks 640 --min-requests 16 &
  shape 1 qwen2_5_14b "conv:0.3,0.8,2" 470 --min-requests 16 &
  wait
elif [ "$PART" = 3 ]; then
  CUDA_VISIBLE_DEVICES=0,1 timeout 500 python3 -m torch.distributed.run --nproc-per-node 2 \
    -m simkv.validation.hf_campaign --shape llama3_70b --out "$W/llama3_70b_tp2" \
    --plan "conv:0.5,1.5" --reps 2 --data data --tp 2 --num-blocks 512 --span 15 \
    --min-requests 16 --max-requests 32 --probe-requests 24 --deadline 440 \
    > "$W/llama3_70b_tp2.log" 2>&1
  echo "llama3_70b_tp2 exit $? after $(( $(date +%s) - T0 )) s" >> "$W/summary.txt"
fi
cat "$W/summary.txt"
for d in "$W"/*/; do [ -f "$d/engine.json" ] && python3 - "$d" <<'EOF'
import json, sys
e = json.load(open(sys.argv[1] + "/engine.json"))
print(e["shape"], "capacity", {k: round(v, 2) for k, v in e.get("capacity_req_per_s", {}).items()},
      "precapture", e.get("precapture"))
for s in e.get("streams", []):
    print("  ", s)
EOF
done
tail -5 "$W"/calibration.log 2>/dev/null
tar -czf "$OUT/h200_part$PART.tar.gz" -C "$W" .
ls -la "$OUT"
