#!/usr/bin/env bash
# The closed-loop ablation (issues 13, 22): one Hydra multirun per factor under one root, then
# the report. Every job is experiment=ablation (the main job's 90-step schedule, one lr for
# whatever trains, checkpoint chosen on val/mask/AP, tested on every split of $TEST_SPLITS).
# One factor varies at a time around the default (T=2, soft pooling, sub-blocks as configured):
#   tune     per-method lr grid on val (hparams_search=ablation_lr, seed 0): region head (T=2)
#            and each baseline; <ROOT>/tune/<method>/optimization_results.yaml holds the winner
#   ref      T=0, no baseline: the frozen base itself (trains nothing: one seed-free job)
#   T        model.region_head.num_iters in $T_VALUES, at the region head's tuned lr
#   baseline model/baseline in $BASELINES at T=0 (equal trainable-parameter budget), each at its
#            own tuned lr
#   blocks   one sub-block switched at T=2 ($BLOCKS; deep supervision off = loss on M^T only)
#   pooling  model.region_head.pool_mode in $POOL_MODES at T=2
# every trained point for each seed in $SEEDS. Parts run in the order given; two shells with
# different PARTS (same ROOT) run side by side once `tune` has finished.
#
# Usage (defaults = the full protocol; set PARTS / the lists / EXTRA to cut it down):
#   scripts/run_ablation.sh                       # everything, seeds 1,2,3
#   ROOT=/tmp/abl SEEDS=1,2 T_VALUES=0,2 BASELINES=lora PARTS="tune T baseline" \
#     TEST_SPLITS="[test]" EXTRA="trainer.max_steps=3 trainer.limit_val_batches=1" scripts/run_ablation.sh
set -euo pipefail
set -o noglob  # BLOCKS holds [..] lists, not patterns
cd "$(dirname "$0")/.."

ROOT=${ROOT:-logs/ablation/multiruns/ablation}
SEEDS=${SEEDS:-1,2,3}
PARTS=${PARTS:-"tune ref T baseline blocks pooling"}
T_VALUES=${T_VALUES:-1,2,3}
BASELINES=${BASELINES:-mask_head,lora,hq_token}
POOL_MODES=${POOL_MODES:-sharpened,thresholded,box_normalised,roi_align}
BLOCKS=${BLOCKS:-"use_self_attn=false use_cross_attn=false use_writeback=true use_text_gating=true iter_loss_weights=[0.0,0.0,1.0]"}
TEST_SPLITS=${TEST_SPLITS:-"[test,test_small,test_crowded,ood,ood_touching]"}
PYTHON=${PYTHON:-python}
# shellcheck disable=SC2206
EXTRA_ARGS=(${EXTRA:-})

run() {  # run <subdir> <overrides...>
  local dir=$1; shift
  $PYTHON train.py -m experiment=ablation "data.test_split=$TEST_SPLITS" \
    "hydra.sweep.dir=$ROOT/$dir" "${EXTRA_ARGS[@]}" "$@"
}

tune() {  # tune <method> <overrides...>
  local method=$1; shift
  $PYTHON train.py -m hparams_search=ablation_lr "hydra.sweep.dir=$ROOT/tune/$method" \
    "${EXTRA_ARGS[@]}" "$@"
}

lr() {  # lr <method>: the tuned learning rate (fails loudly when `tune` has not run)
  local file=$ROOT/tune/$1/optimization_results.yaml
  [[ -f $file ]] || { echo "no $file: run PARTS=tune first" >&2; exit 3; }
  $PYTHON -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['best_params']['model.optimizer.lr'])" "$file"
}

block_name() {  # use_self_attn=false -> use_self_attn ; iter_loss_weights=[..] -> no_deep_supervision
  case $1 in iter_loss_weights=*) echo no_deep_supervision ;; *) echo "${1%%=*}" ;; esac
}

for part in $PARTS; do
  case $part in
    tune)
      tune region_head model.region_head.num_iters=2
      for b in ${BASELINES//,/ }; do tune "$b" model.region_head.num_iters=0 "model/baseline=$b"; done ;;
    ref) run ref model.region_head.num_iters=0 seed=1 ;;
    # per-iteration metrics (test/<split>/iter{t}/...) on the T sweep: the curves of results/refinement
    T) head_lr=$(lr region_head)
       run T "model.region_head.num_iters=$T_VALUES" "model.optimizer.lr=$head_lr" "seed=$SEEDS" \
         model.evaluation.per_iteration=true ;;
    baseline)
      for b in ${BASELINES//,/ }; do
        b_lr=$(lr "$b")
        run "baseline/$b" model.region_head.num_iters=0 "model/baseline=$b" "model.optimizer.lr=$b_lr" "seed=$SEEDS"
      done ;;
    blocks)
      head_lr=$(lr region_head)
      for b in $BLOCKS; do
        run "blocks/$(block_name "$b")" model.region_head.num_iters=2 "model.region_head.$b" \
          "model.optimizer.lr=$head_lr" "seed=$SEEDS"
      done ;;
    pooling)
      head_lr=$(lr region_head)
      for m in ${POOL_MODES//,/ }; do
        run "pooling/$m" model.region_head.num_iters=2 "model.region_head.pool_mode=$m" \
          "model.optimizer.lr=$head_lr" "seed=$SEEDS"
      done ;;
    *) echo "unknown part '$part' (tune ref T baseline blocks pooling)" >&2; exit 2 ;;
  esac
done

if [[ ${REPORT:-1} == 1 ]]; then
  # shellcheck disable=SC2086
  $PYTHON scripts/ablation_report.py "$ROOT" --out "${OUT:-results/ablation}" ${REPORT_ARGS:-}
fi
