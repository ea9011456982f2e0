#!/usr/bin/env bash
# The GPU check, one script (under 8 minutes on one H100):
#
#   bash bench/gpu_check.sh [--dry-run] [--out DIR]
#
# 1. synthetic shards (clipmodule.data.synthetic, img2dataset's layout) at 224 px;
# 2. `clipmodule fit` and open_clip's trainer (`open_clip_train.main` through bench/open_clip_peer.py, given our
#    architecture as a model config) on those shards: ViT-B-32, batch 256, bf16 autocast (Lightning's
#    `bf16-mixed`, open_clip's `amp_bf16`), the same loader workers; samples/s over the last WINDOW - 1 steps
#    of each (data waits included), and MFU = samples/s x training FLOPs per sample / the H100's dense bf16 peak
#    (989 TFLOP/s), the FLOPs counted by torch.utils.flop_counter (forward and backward, full context, on
#    open_clip's build of the architecture: the nominal model; 44.1 GFLOP a sample for ViT-B-32);
# 3. the same fit in fp32 (`32-true`) and compiled (`model.compile: true`, bf16): the per-step losses of the
#    same steps must stay within TOLERANCE (relative) of the bf16 fit's;
# 4. zero-shot throughput, `clipmodule eval`'s pipeline against CLIP_benchmark's (bench/eval_throughput.py);
# 5. the tests that need CUDA (`-k cuda` in tests/clipmodule/train/test_resume.py: skipped without one).
#
# --dry-run: the same steps on the CPU at tiny sizes (tiny-vit, 32 px, a few steps, bf16 autocast on the CPU,
# no MFU), in about 2 minutes on 2 cores; `make test` runs it (tests/bench/test_gpu_check.py).
# Figures go to OUT/results.json and OUT/results.md (OUT: --out, default ./gpu_check_out), each step's output
# to OUT/<step>.log. A failed step is reported and the others still run; the exit code is 1 when a step or a
# check failed. PYTHON (default: the repository's .venv, else python3) runs everything; PEAK_TFLOPS (989)
# is the dense bf16 peak MFU is reckoned against (an H100 PCIe: 756).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN=0
OUT="gpu_check_out"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --out) [ $# -ge 2 ] || { echo "gpu_check.sh: --out needs a folder" >&2; exit 2; }; OUT="$2"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (expected --dry-run, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

if [ "$DRY_RUN" = 1 ]; then
  MODE=dry-run MODEL=tiny-vit SIZE=32 BATCH=8 STEPS=4 WINDOW=2 WORKERS=1 SHARDS=2 PER_SHARD=32
  ACCELERATOR=cpu DEVICE=cpu PEAK_TFLOPS="" STEP_LIMIT=300
  EVAL_ARGS=(--model tiny-vit --per-class 1 --rounds 1 --batch-size 64 --workers 0 --threads 2 --max-templates 1)
  # two cores: no pool of compile workers beside the build (inductor's C++ kernels, cached in
  # /tmp/torchinductor_$USER: about a minute of CPU the first time, seconds after)
  export OMP_NUM_THREADS=2 TORCHINDUCTOR_COMPILE_THREADS=1
else
  # 96 steps of 256 from 12 workers: 8 batches per worker, 2 shards of 1100 each (open_clip splits shards
  # over workers and needs 2048 samples per worker); 26400 samples, so our epoch (from the stats) is longer too
  MODE=gpu MODEL=ViT-B-32 SIZE=224 BATCH=256 STEPS=96 WINDOW=32 WORKERS=12 SHARDS=24 PER_SHARD=1100
  ACCELERATOR=gpu DEVICE=cuda PEAK_TFLOPS="${PEAK_TFLOPS:-989}" STEP_LIMIT=300  # H100 SXM dense bf16
  EVAL_ARGS=(--model ViT-B-32 --per-class 5 --rounds 2 --batch-size 256 --workers 8 --threads 8)
  if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: no CUDA device here; run with --dry-run for the CPU rehearsal" >&2
    exit 2
  fi
fi
TOLERANCE=0.02  # relative: bf16 autocast rounds to 8 bits of mantissa, the losses of the same steps stay close

mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
rm -rf "$OUT"/shards "$OUT"/fit_* "$OUT"/open_clip "$OUT"/*.log "$OUT"/failed_steps.txt "$OUT"/results.*
export PYTHONPATH="$ROOT:$ROOT/bench${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore CLIPMODULE_CACHE="$OUT/cache"
cd "$OUT" || exit 2

step() {  # step NAME COMMAND...: run it (at most STEP_LIMIT s) with its output in NAME.log; note a failure
  local name="$1" started=$SECONDS
  shift
  echo "== $name"
  if timeout "$STEP_LIMIT" "$@" >"$OUT/$name.log" 2>&1; then
    echo "   done in $((SECONDS - started)) s"
  else
    echo "   FAILED ($name, exit $?, $((SECONDS - started)) s); the end of $OUT/$name.log:"
    tail -n 15 "$OUT/$name.log" | sed 's/^/   | /'
    echo "$name" >>"$OUT/failed_steps.txt"
  fi
}

device_name="$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name() if '$DEVICE' == 'cuda' else 'CPU')")"
cat >"$OUT/settings.json" <<EOF
{"mode": "$MODE", "model": "$MODEL", "image_size": $SIZE, "batch_size": $BATCH, "steps": $STEPS,
 "workers": $WORKERS, "shards": $SHARDS, "samples_per_shard": $PER_SHARD, "accelerator": "$ACCELERATOR",
 "device_name": "$device_name", "precision": "bf16-mixed (open_clip: amp_bf16); reference 32-true"}
EOF

step shards "$PYTHON" "$ROOT/bench/gpu_check.py" shards "$OUT/shards" --shards "$SHARDS" --per-shard "$PER_SHARD" \
  --size "$SIZE" --jobs "$(nproc)"
step flops "$PYTHON" "$ROOT/bench/gpu_check.py" flops --model "$MODEL" --out "$OUT/flops.json"

fit() {  # fit NAME PRECISION [options...]: `clipmodule fit` of STEPS steps, losses per step in NAME/, timed
  local name="$1" precision="$2"
  shift 2
  step "$name" "$PYTHON" -m clipmodule fit -c "$ROOT/experiments/base.yaml" \
    --model.model.init_args.name "$MODEL" --data.train_shards "$OUT/shards" --data.batch_size "$BATCH" \
    --data.num_workers "$WORKERS" --data.data_card null --trainer.accelerator "$ACCELERATOR" --trainer.devices 1 \
    --trainer.precision "$precision" --trainer.max_steps "$STEPS" --trainer.max_epochs -1 \
    --trainer.log_every_n_steps 1 --trainer.enable_progress_bar false --trainer.default_root_dir "$OUT/$name" \
    --trainer.logger lightning.pytorch.loggers.CSVLogger --trainer.logger.init_args.save_dir "$OUT/$name" \
    --trainer.callbacks "[{\"class_path\": \"gpu_check_timer.StepTimer\", \"init_args\": \
{\"output\": \"$OUT/${name}_timer.json\", \"window\": $((WINDOW - 1))}}]" \
    --checkpoint.save_last false --checkpoint.every_n_train_steps 1000000 "$@"
}
fit fit_bf16 bf16-mixed
fit fit_fp32 32-true
fit fit_compile bf16-mixed --model.compile true

step open_clip_config "$PYTHON" "$ROOT/bench/gpu_check.py" open-clip-config --model "$MODEL" \
  --out "$OUT/gpu-check-$MODEL.json"
# --log-every-n-steps WINDOW: open_clip logs at steps 0, W, 2W... and the last, and its `Batch (t)` averages the
# steps since its previous line: the last WINDOW - 1 (STEPS is a multiple of WINDOW), which StepTimer times for ours
step open_clip "$PYTHON" "$ROOT/bench/open_clip_peer.py" --model-config "$OUT/gpu-check-$MODEL.json" \
  --model "gpu-check-$MODEL" --train-data "$OUT/shards/{00000..$(printf %05d $((SHARDS - 1)))}.tar" \
  --dataset-type webdataset --train-num-samples $((STEPS * BATCH)) --batch-size "$BATCH" --workers "$WORKERS" \
  --epochs 1 --lr 5e-4 --wd 0.2 --beta1 0.9 --beta2 0.98 --eps 1e-6 --warmup 2000 --seed 0 \
  --precision amp_bf16 --device "$DEVICE" --logs "$OUT/open_clip" --name peer --report-to "" \
  --log-every-n-steps "$WINDOW" --save-frequency 0

step eval "$PYTHON" "$ROOT/bench/eval_throughput.py" "${EVAL_ARGS[@]}" --settings same --device "$DEVICE" \
  --json "$OUT/eval.json"
step cuda_tests "$PYTHON" -m pytest -q -rs -p no:cacheprovider "$ROOT/tests/clipmodule/train/test_resume.py" -k cuda

"$PYTHON" "$ROOT/bench/gpu_check.py" report "$OUT" ${PEAK_TFLOPS:+--peak-tflops "$PEAK_TFLOPS"} \
  --window $((WINDOW - 1)) --loss-steps "$STEPS" --tolerance "$TOLERANCE"
status=$?
if [ -s "$OUT/failed_steps.txt" ]; then
  echo "failed steps: $(tr '\n' ' ' <"$OUT/failed_steps.txt")"
  status=1
fi
echo "results: $OUT/results.json, $OUT/results.md"
exit $status
