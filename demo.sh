#!/usr/bin/env bash
# The whole workflow on real multi-label images built from scikit-learn's handwritten digits:
# data -> TFRecords -> train (with evaluate.py alongside) -> evaluate -> calibrate -> 10-crop
# inference on a held-out test split -> thresholds applied. `make demo` runs it in a fresh .venv.
#
# From scratch on 2 CPU cores ResNet-50 learns slowly: expect a modest mAP. Fine-tuning from the
# official resnet_v2_50.ckpt (--base_network_checkpoint) gives far better results; see README.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-.venv/bin/python}
OUT=${DEMO_OUT:-demo_out}
STEPS=${DEMO_STEPS:-300}
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
rm -rf "$OUT"
mkdir -p "$OUT"
start=$(date +%s)
stage() { echo; echo "=== [$(( $(date +%s) - start )) s] $*"; }

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

stage "3. Train $STEPS steps from scratch (fine-tuning the whole net) with evaluate.py alongside"
# A short from-scratch run: lower slim's BN decay (0.997) so the moving statistics keep up.
$PY train.py --label_count=10 --input_tfrecord_file="$OUT/records/train.tfrecord-*" \
  --train_dir="$OUT/train" --target_height=64 --target_width=64 --resize_height=72 \
  --resize_width=72 --train_base_network=true --batch_norm_decay=0.9 \
  --number_of_steps="$STEPS" --save_checkpoint_steps=100 --log_every_n_steps=25 \
  --image_summary_steps=100 --label_names_file="$OUT/data/label_names.txt" > "$OUT/train.log" 2>&1 &
train_pid=$!
$PY evaluate.py --checkpoint_dir="$OUT/train" --input_tfrecord_file="$OUT/records/eval.tfrecord-*" \
  --min_global_step=100 --eval_interval_secs=5 --timeout_secs=120 > "$OUT/evaluate.log" 2>&1 &
eval_pid=$!
tail -f "$OUT/train.log" --pid=$train_pid | grep --line-buffered -E "^step|resumed|restored|saved"
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

stage "6. 10-crop inference on the held-out test split"
$PY inference.py --checkpoint_path="$OUT/train" --image_list_file="$OUT/data/test/image_list" \
  --image_dir="$OUT/data/test/images" --inference_dir="$OUT/inference" \
  --thresholds_file="$OUT/thresholds.txt" --gpu_id=-1

stage "7. Thresholds applied to the test scores"
$PY threshold_calibration.py --label_file="$OUT/eval_labels.txt" --score_file="$OUT/eval_scores.txt" \
  --apply_to="$OUT/inference/scores.txt" --predictions_file="$OUT/test_predictions.txt" \
  --apply_labels="$OUT/data/test/image_label" --run_dir="$OUT/train" | sed -n '/^test set/,$p'

stage "8. Summary"
$PY demo/report.py --out="$OUT"
echo "done in $(( $(date +%s) - start )) s. TensorBoard: tensorboard --logdir $OUT/train"
