#!/usr/bin/env bash
# The training objectives of issue 27 beside their baseline on synthetic shape shards, on a CPU, then
# `clipmodule compare` over the runs (a markdown table and curves):
#   bash bench/objectives_compare.sh [OUT]        (default /tmp/objectives_compare; ~10 minutes on 2 cores)
# Runs (experiment "objectives"): a teacher (the student's shape, twice as wide and deep, trained longer); the
# student alone (baseline, AdamW + cosine, with model.ema so val_ema/* sits beside val/*); the student distilled
# from the teacher; the student with Lion; the student with layer decay 0.75 and the const-cooldown schedule; the
# student with hard negatives; the baseline student continued fully or through LoRA adapters only.
set -euo pipefail
OUT=${1:-/tmp/objectives_compare}
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-300}
mkdir -p "$OUT"
$PY - "$OUT" <<'PYTHON'
import sys
from clipmodule.data.synthetic import write_synthetic_shards
write_synthetic_shards(f"{sys.argv[1]}/train", 8, 128, image_size=32, seed=0)
write_synthetic_shards(f"{sys.argv[1]}/val", 1, 128, image_size=32, seed=1)
PYTHON
CLASSES=$($PY -c "from clipmodule.data.synthetic import CLASSNAMES; print('[' + ', '.join(CLASSNAMES) + ']')")
COMMON=(-c experiments/base.yaml -c experiments/tiny_cpu.yaml --data.train_shards "$OUT/train"
        --data.val_shards "$OUT/val" --data.zeroshot_shards "$OUT/val" --data.zeroshot_classnames "$CLASSES"
        --data.batch_size 64 --data.num_workers 1 --trainer.default_root_dir "$OUT/runs"
        --trainer.logger.init_args.tracking_uri "sqlite:///$OUT/mlruns.db"
        --trainer.logger.init_args.experiment_name objectives --checkpoint.every_n_train_steps 1000000
        --model.optim.warmup_steps 20)
STUDENT=(--model.model.init_args.overrides '{embed_dim: 64, text: {layers: 1, width: 64}, vision: {layers: 1, width: 64}}'
         --trainer.max_steps "$STEPS" --trainer.val_check_interval "$STEPS" --model.ema '{decay: 0.98}')
fit() { $PY -m clipmodule fit "${COMMON[@]}" "$@" > "$OUT/$(echo "$@" | md5sum | cut -c1-8).log" 2>&1; }

fit --trainer.max_steps $((STEPS * 2)) --trainer.val_check_interval $((STEPS * 2)) \
    --trainer.logger.init_args.run_name teacher --checkpoint.dirpath "$OUT/teacher"
TEACHER="$OUT/teacher/last.ckpt"
fit "${STUDENT[@]}" --trainer.logger.init_args.run_name student --checkpoint.dirpath "$OUT/student"
fit "${STUDENT[@]}" --trainer.logger.init_args.run_name student-distilled --model.distill "{teacher: $TEACHER}"
fit "${STUDENT[@]}" --trainer.logger.init_args.run_name student-lion --model.optim.name lion \
    --model.optim.lr 1.0e-4 --model.optim.weight_decay 1.0
fit "${STUDENT[@]}" --trainer.logger.init_args.run_name student-layer-decay --model.optim.layer_decay 0.75 \
    --model.optim.schedule const-cooldown --model.optim.cooldown_steps 50
# NegCLIP's rule-based hard negatives: the synthetic captions ("a red cube and a blue ball") give the attribute swaps
fit "${STUDENT[@]}" --trainer.logger.init_args.run_name student-hard-negatives --model.hard_negatives '{count: 2}'
# LoRA: the baseline student's weights frozen, rank-8 adapters on both towers trained for as many steps again
# (beside it, the same student trained fully for as many more steps)
AGAIN=(--model.model.init_args.overrides '{embed_dim: 64, text: {layers: 1, width: 64}, vision: {layers: 1, width: 64}}'
       --trainer.max_steps "$STEPS" --trainer.val_check_interval "$STEPS" --model.init_from "$OUT/student/last.ckpt")
fit "${AGAIN[@]}" --trainer.logger.init_args.run_name student-then-full --model.optim.lr 1.0e-4
fit "${AGAIN[@]}" --trainer.logger.init_args.run_name student-then-lora --model.lora '{rank: 8, alpha: 16}'
$PY -m clipmodule compare -e objectives --tracking.uri "sqlite:///$OUT/mlruns.db" --out "$OUT/compare" \
    --metrics val/zeroshot_top1,val_ema/zeroshot_top1,val/image_to_text_R1,val_ema/image_to_text_R1,train/loss
