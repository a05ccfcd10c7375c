#!/usr/bin/env bash
# One device call of the sustained-saturation campaign (issue 19; power for issue 24) on one
# GPU (H100 or H200: the lent machine decides; the GPU is recorded), run from a folder holding
# simkv/ and data/ (the Azure 2023 trace CSVs): `bash run_2026-12-07.sh PART` where PART is
#   1: Llama-3.1-8B: sustained BurstGPT-shaped streams (2x twice, 3x; 400 requests each), then
#      memory pressure over the 2x stream (160 KV blocks); Qwen2.5-7B: the same sustained
#      streams; the GEMM and MoE kernels (below)
#   2: the power loops; Llama-3.1-8B's 1.5x stream, then its 2x stream under other engine
#      configurations: 64 KV blocks, then the pairs (token budget 512, KV blocks halved, at
#      most 32 sequences, the prefill-first scheduler); Qwen2.5-7B's 1.5x stream. Streams an
#      earlier call measured on the same warm machine are skipped (--skip-done).
#   3: Mixtral-8x7B's sustained 2x stream (whole on an H200; 16 of 32 layers on an H100)
#   4: (the second session's first call) Llama-3.1-8B on a third machine: the 2x stream again
#      (a same-machine base for the pairs), its 1.5x stream twice, then the pairs over the 2x
#      stream (at most 32 sequences, KV blocks halved to 512, the prefill-first scheduler);
#      Qwen2.5-7B's 1.5x stream twice, then its 3x stream twice while time is left. The loads
#      are those of the first call's probes (--capacity-file the committed engine.json).
#   5: (its second call) Mixtral-8x7B's sustained 2x stream twice (16 of 32 layers on an
#      H100), then Qwen2.5-14B: its probe, 2x twice, 1.5x, 3x (640 KV blocks: 1,024 do not fit
#      beside its 29.5 GB of weights on an H100)
# The kernels: power characterisation loops, the H100 GEMM grid
# (gemm_shapes, small ops; on an H100 only), launch-free GEMMs, transformers' MoE blocks.
# GPU power is sampled during everything (NVML every 50 ms, and nvidia-smi -lms 50). Each
# process has a deadline after which it starts no new stream, so the call ends inside the
# device's 10-minute limit with whatever finished. Everything lands in
# $OUT/part<PART>.tar.gz (raw CSVs, logs, environment). DRY_ARGS (empty on the device)
# lets a CPU dry run shrink the model and the streams.
set -u
PART=${1:?part}
W=/tmp/campaign_2026-12-07
C=$W/campaign
mkdir -p "$W/power" "$C"
touch "$W/.start_part$PART"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
T0=$(date +%s)
LIMIT=${LIMIT:-555}       # seconds of this call's command before the tar
left() { echo $(( LIMIT - ($(date +%s) - T0) )); }
SHAPE_A=${SHAPE_A:-llama3_8b}
SHAPE_B=${SHAPE_B:-qwen2_5_7b}
NAME_A=${NAME_A:-$SHAPE_A}
NAME_B=${NAME_B:-$SHAPE_B}
DRY_ARGS=${DRY_ARGS:-}
{
  date -u; echo "part $PART"; uname -a
  nvidia-smi 2>&1; nvidia-smi -q -d POWER,CLOCK,PERFORMANCE 2>&1 | head -120
  python3 -c 'import torch, transformers, triton; print("torch", torch.__version__, "transformers", transformers.__version__, "triton", triton.__version__, "gpus", torch.cuda.device_count())'
  python3 -m pip show nvidia-ml-py 2>/dev/null | head -2
} > "$W/environment_part$PART.txt" 2>&1

# --- power: sampled during the whole call --------------------------------------------------
Q=timestamp,power.draw,power.draw.instant,clocks.sm,clocks.mem,utilization.gpu,temperature.gpu
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=$Q --format=csv,nounits -c 1 > /dev/null 2>&1 \
    || Q=timestamp,power.draw,clocks.sm,clocks.mem,utilization.gpu,temperature.gpu
  nvidia-smi --query-gpu=$Q --format=csv,nounits -lms 50 > "$W/power/nvsmi_part$PART.csv" 2>&1 &
  SMI=$!
fi
python3 -m simkv.calibration.power sample --out "$W/power/nvml_part$PART.csv" --interval 0.05 \
  > "$W/power/nvml_part$PART.log" 2>&1 &
NVML=$!
echo "$(date -u +%FT%T.%N) part $PART start (perf_counter $(python3 -c 'import time; print(time.perf_counter())'))" \
  >> "$W/power/markers_part$PART.txt"
mark() { echo "$(date -u +%FT%T.%N) $*" >> "$W/power/markers_part$PART.txt"; }

campaign() {  # NAME SHAPE DEADLINE_S [args]: one engine process, its deadline from now
  local name=$1 shape=$2 deadline=$3; shift 3
  mark "begin $name"
  timeout $((deadline + 15)) python3 -m simkv.validation.hf_campaign --shape "$shape" \
    --out "$C/$name" --data data --deadline "$deadline" "$@" $DRY_ARGS > "$C/$name.log" 2>&1
  echo "$name exit $? after $(( $(date +%s) - T0 )) s" >> "$W/summary.txt"
  mark "end $name"
}
kernels_power() {  # power characterisation loops (about 35 s)
  mkdir -p "$W/calibration"
  mark "loops begin"
  timeout 90 python3 -m simkv.calibration.power loops --out "$W/power/loops.csv" --seconds 2 --idle 5 \
    ${DRY_ARGS_LOOPS:-} > "$W/power/loops.log" 2>&1
  echo "power loops exit $? after $(( $(date +%s) - T0 )) s" >> "$W/summary.txt"
}
kernels_gemm() {  # the GEMM grid (an H100 only), launch-free GEMMs, transformers' MoE blocks
  mkdir -p "$W/calibration"
  if nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | grep -q H100; then
    mark "calibration begin"
    timeout 110 python3 -m simkv.calibration.run --out "$W/calibration" --only gemm_shapes ops \
      > "$W/calibration.log" 2>&1
    echo "calibration exit $? after $(( $(date +%s) - T0 )) s" >> "$W/summary.txt"
  fi
  mark "gemm graph begin"
  timeout 50 python3 -m simkv.calibration.graph_timing --out "$W/calibration/gemm_graph.csv" \
    --deadline 30 ${DRY_ARGS_GRAPH:-} > "$W/calibration/gemm_graph.log" 2>&1
  echo "gemm graph exit $? after $(( $(date +%s) - T0 )) s" >> "$W/summary.txt"
  mark "moe begin"
  timeout 60 python3 -m simkv.calibration.moe_bench --out "$W/calibration" --deadline 40 \
    ${DRY_ARGS_MOE:-} > "$W/calibration/moe.log" 2>&1
  echo "moe exit $? after $(( $(date +%s) - T0 )) s" >> "$W/summary.txt"
  mark "kernels end"
}
# Memory pressure first (never measured), then the configuration pairs over the same 2x stream.
VARIANTS="kv160:num_blocks=160;kv64:num_blocks=64,requests=200;tb512:max_batch_tokens=512;kv512:num_blocks=512"
VARIANTS+=";seq32:max_requests_per_batch=32;pf:scheduler_type=prefill_first"
SUSTAINED=(--plan "burst:2*2,3*1,1.5*1" --requests 400 --probe-requests 160
           --capacity-method burst-middle --precapture 15 --variant-plan "burst:2*1"
           --variant-precapture 10)

if [ "$PART" = 1 ]; then
  mark "idle"; sleep 5
  campaign "$NAME_A" "$SHAPE_A" "${A_S:-250}" "${SUSTAINED[@]}" --plan "burst:2*2,3*1" \
    --variants "kv160:num_blocks=160"
  campaign "$NAME_B" "$SHAPE_B" "$(( $(left 0) - ${KERNEL_S:-75} ))" "${SUSTAINED[@]}" --plan "burst:2*2,3*1"
  kernels_gemm
elif [ "$PART" = 2 ]; then
  kernels_power
  campaign "$NAME_A" "$SHAPE_A" "$(( $(left 0) - ${B_S:-90} ))" "${SUSTAINED[@]}" --skip-done \
    --capacity-file "$C/$NAME_A/engine.json" --variants "$VARIANTS"
  campaign "$NAME_B" "$SHAPE_B" "$(left 0)" "${SUSTAINED[@]}" --skip-done \
    --capacity-file "$C/$NAME_B/engine.json"
elif [ "$PART" = 3 ]; then
  if [ "$(left 0)" -gt 150 ]; then  # what time is left: the MoE shape's sustained 2x stream
    MEM=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1)
    if [ "${MEM:-0}" -gt 120000 ]; then  # an H200: the whole model (94 GB), 640 blocks as on 11-30
      campaign mixtral_8x7b mixtral_8x7b "$(left 0)" "${SUSTAINED[@]}" --plan "burst:2*2" \
        --num-blocks 640 --precapture 10
    else  # an H100: 16 of its 32 layers (each layer's MoE as the model's), 46 GB
      campaign mixtral_8x7b_l16 mixtral_8x7b "$(left 0)" "${SUSTAINED[@]}" --plan "burst:2*2" \
        --num-layers 16 --precapture 10
    fi
  fi
elif [ "$PART" = 4 ]; then
  V=validation/hf_h100_2026-12-07
  campaign "${NAME_A}_c3" "$SHAPE_A" "$(( $(left 0) - ${B_S:-150} ))" "${SUSTAINED[@]}" \
    --plan "burst:2*1,1.5*2" --capacity-file "$V/$SHAPE_A/engine.json" \
    --variants "seq32:max_requests_per_batch=32;kv512:num_blocks=512;pf:scheduler_type=prefill_first"
  campaign "${NAME_B}_c3" "$SHAPE_B" "$(( $(left 0) - 20 ))" "${SUSTAINED[@]}" \
    --plan "burst:1.5*2,3*2" --capacity-file "$V/$SHAPE_B/engine.json"
elif [ "$PART" = 5 ]; then
  campaign mixtral_8x7b_l16 mixtral_8x7b "${M_S:-230}" "${SUSTAINED[@]}" --plan "burst:2*2" \
    --num-layers 16 --precapture 10
  campaign qwen2_5_14b qwen2_5_14b "$(( $(left 0) - 20 ))" "${SUSTAINED[@]}" \
    --plan "burst:2*2,1.5*1,3*1" --num-blocks 640
fi
mark "part $PART end"
kill "$NVML" 2> /dev/null; [ -n "${SMI:-}" ] && kill "$SMI" 2> /dev/null
sleep 0.5
cat "$W/summary.txt"
for d in "$C"/*/; do [ -f "$d/engine.json" ] && python3 - "$d" <<'EOF'
import json, sys
e = json.load(open(sys.argv[1] + "/engine.json"))
print(sys.argv[1].rstrip("/").split("/")[-1], "capacity", {k: round(v, 2) for k, v in e.get("capacity_req_per_s", {}).items()},
      "precapture", e.get("precapture"))
for s in e.get("streams", []):
    print("  ", {k: (round(v, 2) if isinstance(v, float) else v) for k, v in s.items() if k != "graphs_before"})
EOF
done
tail -3 "$W"/calibration.log "$W"/power/loops.log 2>/dev/null
# Only what this call wrote: an earlier call's files on the same warm machine came back with it.
(cd "$W" && find . -type f -newer ".start_part$PART" > "$W/.files_part$PART")
tar -czf "$OUT/part$PART.tar.gz" -C "$W" -T "$W/.files_part$PART"
ls -la "$OUT"
