#!/usr/bin/env bash
# The whole workflow on real multi-label images built from scikit-learn's handwritten digits:
# data -> TFRecords -> train (with evaluate.py alongside) -> evaluate -> calibrate -> 10-crop
# inference on a held-out test split -> thresholds applied -> a second label set trained on the
# first run's backbone. `make demo` runs it in a fresh .venv.
#
# ResNet-50 is trained from scratch here (the official checkpoint can't be downloaded on the
# machines this is built on), with the toolkit's recipe for short runs from scratch. DEMO_RECIPE=
# original runs the original toolkit's recipe instead, for comparison. Fine-tuning from the
# official resnet_v2_50.ckpt (--base_network_checkpoint) is the toolkit's main use; see README.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-.venv/bin/python}
OUT=${DEMO_OUT:-demo_out}
STEPS=${DEMO_STEPS:-600}
RECIPE=${DEMO_RECIPE:-short}
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
rm -rf "$OUT"
mkdir -p "$OUT"
start=$(date +%s)
stage() { echo; echo "=== [$(( $(date +%s) - start )) s] $*"; }
case "$RECIPE" in
  short) recipe_flags=(--augmentation=none --head_depth=256 --lr_schedule=cosine
                       --warmup_steps=$(( STEPS / 20 )))
         recipe_line="the recipe for short runs from scratch (README, Accuracy)" ;;
  original) recipe_flags=()
            recipe_line="the original toolkit's recipe (augmentation=seed, head_depth=label_count)" ;;
  *) echo "error: DEMO_RECIPE=$RECIPE: expected short or original" >&2; exit 2 ;;
esac

stage "1. Build the digits data set (train/eval/test from disjoint source digits)"
$PY make_demo_data.py --output_dir="$OUT/data"

stage "2. Images + image_list + image_label -> TFRecords, and verify them"
for split in train eval test; do
  $PY create_tfrecord.py --image_dir="$OUT/data/$split/images" \
    --imglist_file="$OUT/data/$split/image_list" --imglabel_file="$OUT/data/$split/image_label" \
    --output_file="$OUT/records/$split.tfrecord" --num_shards=2
done
$PY read_tfrecord.py --data_path="$OUT/records/train.tfrecord-*" --dump_dir="$OUT/samples" \
  --num_samples=6

stage "3. Train $STEPS steps from scratch (the whole net) with evaluate.py alongside"
echo "recipe: $recipe_line: ${recipe_flags[*]:-the defaults}"
# 32 px crops of the 64 px images, 64 a batch: a from-scratch ResNet-50 needs many images seen,
# and on 2 cores these are 4x cheaper than 64 px ones. A short run: lower slim's BN decay (0.997)
# so the moving statistics keep up.
: > "$OUT/train.log"  # made here: the tail below may start before train.py's redirection does
$PY train.py --label_count=10 --input_tfrecord_file="$OUT/records/train.tfrecord-*" \
  --train_dir="$OUT/train" --target_height=32 --target_width=32 --resize_height=36 \
  --resize_width=36 --batch_size=64 --train_base_network=true --batch_norm_decay=0.9 \
  "${recipe_flags[@]}" --number_of_steps="$STEPS" --save_checkpoint_steps=$(( STEPS / 3 )) \
  --save_checkpoint_secs=0 --log_every_n_steps=50 --image_summary_steps=200 \
  --label_names_file="$OUT/data/label_names.txt" > "$OUT/train.log" 2>&1 &
train_pid=$!
# The three checkpoints, then exit. The timeout (from the start, as the original's) only guards
# against a train.py that died: the first checkpoint takes minutes to come on 2 cores.
$PY evaluate.py --checkpoint_dir="$OUT/train" --input_tfrecord_file="$OUT/records/eval.tfrecord-*" \
  --min_global_step=$(( STEPS / 3 )) --eval_interval_secs=5 --max_evaluations=3 \
  --timeout_secs=1800 \
  > "$OUT/evaluate.log" 2>&1 &
eval_pid=$!
# A failure here stops both, so that nothing trains or waits on after the demo has exited.
trap 'kill $train_pid $eval_pid 2>/dev/null || true' EXIT
tail -f "$OUT/train.log" --pid=$train_pid | grep --line-buffered -E "^step|^warning|resumed|restored|saved"
wait $train_pid
wait $eval_pid || true
grep -E "^ckpt-.*mAP" "$OUT/evaluate.log" | sed 's/^/evaluator alongside: /' || true

stage "4. Final evaluation of the last checkpoint, writing eval scores and labels"
$PY evaluate.py --checkpoint_dir="$OUT/train" --input_tfrecord_file="$OUT/records/eval.tfrecord-*" \
  --run_once=true --eval_dir="$OUT/final_eval" --score_file="$OUT/eval_scores.txt" \
  --label_file="$OUT/eval_labels.txt"

stage "5. Per-label thresholds on the eval split (ROC point nearest (0,1), as the original)"
$PY threshold_calibration.py --label_file="$OUT/eval_labels.txt" --score_file="$OUT/eval_scores.txt" \
  --output_file="$OUT/thresholds.txt" --run_dir="$OUT/train"

stage "6. Inference on the held-out test split (views=auto: 10 crops, or the one view it trained on)"
$PY inference.py --checkpoint_path="$OUT/train" --image_list_file="$OUT/data/test/image_list" \
  --image_dir="$OUT/data/test/images" --inference_dir="$OUT/inference" \
  --thresholds_file="$OUT/thresholds.txt" --gpu_id=-1

stage "7. Thresholds applied to the test scores"
$PY threshold_calibration.py --label_file="$OUT/eval_labels.txt" --score_file="$OUT/eval_scores.txt" \
  --apply_to="$OUT/inference/scores.txt" --predictions_file="$OUT/test_predictions.txt" \
  --apply_labels="$OUT/data/test/image_label" --run_dir="$OUT/train" | sed -n '/^test set/,$p'

stage "8. Transfer: a new label set (has an even digit, has a digit > 5) on the frozen backbone"
# base_network_checkpoint takes our own run: only its backbone is restored, and by default
# (train_base_network=false) only the new head trains, which is several times faster.
$PY -m demo.derive_labels --data="$OUT/data" --out="$OUT/data2"
for split in train eval; do
  $PY create_tfrecord.py --image_dir="$OUT/data/$split/images" \
    --imglist_file="$OUT/data2/$split/image_list" --imglabel_file="$OUT/data2/$split/image_label" \
    --output_file="$OUT/records2/$split.tfrecord" --num_shards=2 | grep "^wrote"
done
$PY train.py --label_count=2 --input_tfrecord_file="$OUT/records2/train.tfrecord-*" \
  --train_dir="$OUT/train2" --base_network_checkpoint="$OUT/train" --target_height=32 \
  --target_width=32 --resize_height=36 --resize_width=36 --batch_size=64 \
  --augmentation=none --head_depth=256 --number_of_steps=150 \
  --log_every_n_steps=50 --label_names_file="$OUT/data2/label_names.txt" \
  | grep --line-buffered -E "^step 150|restored|saved"
$PY evaluate.py --checkpoint_dir="$OUT/train2" \
  --input_tfrecord_file="$OUT/records2/eval.tfrecord-*" --run_once=true \
  --eval_dir="$OUT/train2/final_eval" | grep -E "^ckpt-|^has_"

stage "9. Summary"
echo "recipe: $recipe_line"
$PY -m demo.report --out="$OUT"
echo "done in $(( $(date +%s) - start )) s. TensorBoard: tensorboard --logdir $OUT/train"
