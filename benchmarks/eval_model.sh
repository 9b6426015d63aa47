#!/usr/bin/env bash
# The evaluations behind a model card (models/<name>/README.md), one folder each under OUT.
#   benchmarks/eval_model.sh MODEL [OUT]     MODEL: a registered name (shipped weights) or a checkpoint
# Needs ../shared/data (or PERCEPTION_SHARED_DATA) for the real-data rows.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$1
OUT=${2:-runs/eval/$(basename "${MODEL%.safetensors}")}
SHARED=${PERCEPTION_SHARED_DATA:-../shared/data}
P=${PERCEPTION:-.venv/bin/perception}
mkdir -p "$OUT"
# synthetic test split (seed 90000: never used in training), fused and train forms
$P eval --model "$MODEL" --dataset synth --seed 90000 --frames 40 --out "$OUT/synth"
$P eval --model "$MODEL" --dataset synth --seed 90000 --frames 40 --backend torch-train --qualitative 0 --out "$OUT/synth-train-form"
# real: nuScenes keyframe (six cameras, LiDAR depth), KITTI 000008, the dashcam clip against the teacher
$P eval --model "$MODEL" --dataset nuscenes --data "$SHARED/nuscenes_keyframe" --size 256x448 --out "$OUT/nuscenes"
$P eval --model "$MODEL" --dataset kitti --data "$SHARED/kitti_000008" --size 256x832 --out "$OUT/kitti"
$P eval --model "$MODEL" --dataset video --data "$SHARED/dashcam/test_video.mp4" --calib data/rigs/dashcam_1280x720.yaml \
    --size 384x640 --teacher "$SHARED/weights/yolox_nano.onnx" --out "$OUT/dashcam"
# the same at the sizes `perception run` picks by focal length (docs/pipeline.md, "Input size")
$P eval --model "$MODEL" --dataset kitti --data "$SHARED/kitti_000008" --size 192x608 --qualitative 0 \
    --out "$OUT/kitti-192x608"
$P eval --model "$MODEL" --dataset video --data "$SHARED/dashcam/test_video.mp4" --calib data/rigs/dashcam_1280x720.yaml \
    --size 224x384 --teacher "$SHARED/weights/yolox_nano.onnx" --agree-score 0.5 --qualitative 0 \
    --out "$OUT/dashcam-224x384"
