#!/usr/bin/env bash
# The closed-loop ablation (issue 13), one multirun per factor, all under one root, then the
# report. One factor varies at a time around the default (T=2, soft pooling, every sub-block on):
#   T        model.region_head.num_iters in $T_VALUES (0 = the frozen base itself, the reference)
#   baseline model/baseline in $BASELINES at T=0 (equal trainable-parameter budget to the head)
#   blocks   one sub-block switched at T=2 ($BLOCKS)
#   pooling  model.region_head.pool_mode in $POOL_MODES at T=2
# every point for each seed in $SEEDS, tested on $TEST_SPLITS (metrics test/<split>/...).
#
# Usage (defaults = the full protocol; set PARTS / the lists / EXTRA to cut it down):
#   scripts/run_ablation.sh                       # everything, seeds 1,2,3, experiment schedule
#   ROOT=logs/ablation_smoke SEEDS=1,2 T_VALUES=0,2 BASELINES=lora,hq_token PARTS="T baseline" \
#     TEST_SPLITS="[val,small,crowded]" EXTRA="trainer.max_steps=3 trainer.limit_val_batches=1" \
#     scripts/run_ablation.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${ROOT:-logs/region_head/multiruns/ablation}
SEEDS=${SEEDS:-1,2,3}
PARTS=${PARTS:-"T baseline blocks pooling"}
T_VALUES=${T_VALUES:-0,1,2,3}
BASELINES=${BASELINES:-mask_head,lora,hq_token}
POOL_MODES=${POOL_MODES:-sharpened,thresholded,box_normalised,roi_align}
BLOCKS=${BLOCKS:-"use_self_attn=false use_cross_attn=false use_ffn=false pool_pixel=false pool_memory=false use_writeback=true use_text_gating=true"}
TEST_SPLITS=${TEST_SPLITS:-"[test,test_small,test_crowded]"}
PYTHON=${PYTHON:-python}
# shellcheck disable=SC2206
EXTRA_ARGS=(${EXTRA:-})

run() {  # run <subdir> <overrides...>
  local dir=$1; shift
  $PYTHON train.py -m experiment=region_head "data.test_split=$TEST_SPLITS" "seed=$SEEDS" \
    "hydra.sweep.dir=$ROOT/$dir" "${EXTRA_ARGS[@]}" "$@"
}

for part in $PARTS; do
  case $part in
    T) run T "model.region_head.num_iters=$T_VALUES" ;;
    baseline) run baseline model.region_head.num_iters=0 "model/baseline=$BASELINES" ;;
    blocks) for b in $BLOCKS; do run "blocks/${b%%=*}" model.region_head.num_iters=2 "model.region_head.$b"; done ;;
    pooling) run pooling model.region_head.num_iters=2 "model.region_head.pool_mode=$POOL_MODES" ;;
    *) echo "unknown part '$part' (T baseline blocks pooling)" >&2; exit 2 ;;
  esac
done

$PYTHON scripts/ablation_report.py "$ROOT" --out "${OUT:-results/ablation}" ${REPORT_ARGS:-}
