#!/usr/bin/env bash
# The training engine on a CUDA GPU, in one short run (docs/real_setting.md, "Checked on a GPU").
#
#   bash scripts/gpu_check.sh OUT_DIR [PLAN_FILE]
#
# Run from the repo root on a machine where torch sees a GPU and the project's stack is
# importable. DVC is not needed: PLAN_FILE holds the micro pipeline's commands, written
# beforehand with `python -m pipa.preset micro && python scripts/stage_commands.py --plan
# --skip download grader_agreement` (default: runs/gpu_plan_micro.tsv). Writes OUT_DIR/summary.txt
# and OUT_DIR/gpu_check.tar.gz (logs, metrics, train.json of every run). What it checks:
#   1. every stage of the micro pipeline on the GPU (world, base models, sampling, SFT,
#      priors, labels, every algorithm's cells with LoRA and value heads, ablations, sweep,
#      reduction study, reports), stages of a wave side by side;
#   2. determinism on the GPU: two cells (PIPA-M, KTO) trained again give the same bytes;
#   3. `accelerate launch` with the shipped DeepSpeed ZeRO-2 and FSDP configs (one process):
#      SFT and an alignment cell;
#   4. a cell of the default study (PIPA-M, unpaired step labels, DS, seed 0) on the GPU,
#      from the default's SFT model, prior and labels (carried in the working tree), beside
#      the CPU run's committed metrics.
set -uo pipefail
OUT="$(realpath -m "${1:?usage: gpu_check.sh OUT_DIR [PLAN_FILE]}")"
PLAN="$(realpath -m "${2:-runs/gpu_plan_micro.tsv}")"
PY="${PYTHON:-python3}"
ROOT="$(pwd)"
RES="$OUT/results"
mkdir -p "$RES"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DVC_NO_ANALYTICS=1
export TOKENIZERS_PARALLELISM=false
failures=()
check() {  # check NAME CMD...: run, log to $RES/NAME.log, record pass/fail with seconds
  local name="$1"; shift
  local t0=$SECONDS
  if "$@" >"$RES/$name.log" 2>&1; then
    echo "PASS $name ($((SECONDS - t0)) s)"
  else
    echo "FAIL $name ($((SECONDS - t0)) s): $(tail -n 3 "$RES/$name.log" | tr '\n' ' ')"
    failures+=("$name")
  fi
}
{
echo "== environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch, transformers, accelerate, peft; print('torch', torch.__version__, \
'cuda', torch.version.cuda, '| transformers', transformers.__version__, '| accelerate', \
accelerate.__version__, '| peft', peft.__version__, '|', torch.cuda.get_device_name())"
"$PY" -c "import deepspeed; print('deepspeed', deepspeed.__version__)" 2>&1 | tail -n 1

echo "== 1. micro pipeline, every stage on the GPU"
rm -rf /tmp/pipa-micro && mkdir /tmp/pipa-micro
if git rev-parse --git-dir >/dev/null 2>&1; then git ls-files -co --exclude-standard -z
else find . -type f ! -path './.git/*' -print0; fi | xargs -0 cp --parents -t /tmp/pipa-micro
cd /tmp/pipa-micro
"$PY" -m pipa.preset micro >/dev/null
check micro_pipeline "$PY" scripts/stage_commands.py --run --plan-file "$PLAN" --jobs 12 \
  --logs "$RES/micro_logs" --python "$PY"
cat "$RES/micro_pipeline.log"

echo "== 2. determinism on the GPU (same cell twice)"
cell() {  # cell ALGO SETTING OUT [launcher...]: one micro alignment cell, DS, seed 0
  local algo="$1" setting="$2" out="$3"; shift 3
  "$@" stages/align.py --algorithm "$algo" --model ds --seed 0 \
    --labels "data/labels/$setting.jsonl" --prior data/prior/sft/ds.safetensors \
    --sft models/sft/ds --out "$out/align" --eval-out "$out/eval"
}
for spec in pipa_m:unpaired_step kto:unpaired_answer; do
  algo="${spec%%:*}"; setting="${spec#*:}"
  first="runs/main/$setting/$algo/ds/seed0"
  check "rerun_$algo" cell "$algo" "$setting" "/tmp/rerun_$algo" "$PY"
  for f in align/train.json eval/metrics.json eval/predictions.jsonl; do
    if cmp -s "$first/$f" "/tmp/rerun_$algo/$f"; then echo "same bytes: $algo $f"
    else echo "DIFFERENT: $algo $f"; failures+=("determinism_$algo"); fi
  done
  (cd "$first/align/model" && sha256sum ./*.safetensors) > /tmp/a.sha
  (cd "/tmp/rerun_$algo/align/model" && sha256sum ./*.safetensors) > /tmp/b.sha
  if cmp -s /tmp/a.sha /tmp/b.sha; then echo "same weights: $algo"
  else echo "DIFFERENT weights: $algo"; failures+=("weights_$algo"); fi
done

echo "== 3. accelerate launch: DeepSpeed ZeRO-2 and FSDP, one process"
for cfg in deepspeed_zero2 fsdp; do
  launch=(accelerate launch --config_file "configs/accelerate/$cfg.yaml" --num_processes 1)
  check "sft_$cfg" "${launch[@]}" stages/sft.py --model ds --base models/base/ds \
    --data data/alphamath/train.json --out "/tmp/sft_$cfg" --live "/tmp/sft_$cfg.dvclive"
  check "align_pipa_m_$cfg" cell pipa_m unpaired_step "/tmp/align_$cfg" "${launch[@]}"
  [ -f "/tmp/align_$cfg/eval/metrics.json" ] && cp "/tmp/align_$cfg/eval/metrics.json" \
    "$RES/align_pipa_m_${cfg}_metrics.json"
  [ -f "/tmp/align_$cfg/align/train.json" ] && cp "/tmp/align_$cfg/align/train.json" \
    "$RES/align_pipa_m_${cfg}_train.json"
done
cp runs/main/unpaired_step/pipa_m/ds/seed0/align/train.json "$RES/align_pipa_m_plain_train.json"
cp runs/main/unpaired_step/pipa_m/ds/seed0/eval/metrics.json "$RES/align_pipa_m_plain_metrics.json"
mkdir -p "$RES/micro_runs" && cp -r runs/main runs/ablation "$RES/micro_runs/" 2>/dev/null
find "$RES/micro_runs" \( -name "*.safetensors" -o -name "*.jsonl" \) -delete

echo "== 4. a cell of the default study on the GPU"
cd "$ROOT"
check default_cell cell pipa_m unpaired_step /tmp/default_cell "$PY"
cp /tmp/default_cell/align/train.json "$RES/default_cell_train.json" 2>/dev/null
cp /tmp/default_cell/eval/metrics.json "$RES/default_cell_metrics.json" 2>/dev/null
cp -r /tmp/default_cell/align/dvclive "$RES/default_cell_dvclive" 2>/dev/null
grep -E "^align|^eval" "$RES/default_cell.log"

echo "== summary"
if [ ${#failures[@]} -eq 0 ]; then echo "gpu_check: all passed"
else echo "gpu_check: FAILED: ${failures[*]}"; fi
} 2>&1 | tee "$OUT/summary.txt"
tar -czf "$OUT/gpu_check.tar.gz" -C "$OUT" results
grep -q "all passed" "$OUT/summary.txt"
