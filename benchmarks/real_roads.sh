#!/usr/bin/env bash
# The real-road checks of issue 24 for one model, at the input sizes `perception run` picks
# (eval --size auto), plus the synthetic test split (the "no more than 0.02 map50 lost" rule):
#   benchmarks/real_roads.sh MODEL [OUT]     MODEL: a registered name or a model file
#   python benchmarks/real_roads_table.py OUT [OUT2 ...]    # one table row per folder
# Needs ../shared/data (or PERCEPTION_SHARED_DATA).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$1
OUT=${2:-runs/real-roads/$(basename "${MODEL%.safetensors}")}
SHARED=${PERCEPTION_SHARED_DATA:-../shared/data}
P=${PERCEPTION:-$PWD/.venv/bin/perception}
PY=${PYTHON:-$PWD/.venv/bin/python}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
mkdir -p "$OUT"
SHARED=$(realpath "$SHARED")
if [ -f "$MODEL" ]; then MODEL=$(realpath "$MODEL"); fi
[ -f "$OUT/synth/metrics.json" ] || $P eval --model "$MODEL" --dataset synth --seed 90000 --frames 40 --qualitative 0 --out "$OUT/synth"
$P eval --model "$MODEL" --dataset nuscenes --data "$SHARED/nuscenes_keyframe" --out "$OUT/nuscenes"
$P eval --model "$MODEL" --dataset kitti --data "$SHARED/kitti_000008" --out "$OUT/kitti"
(cd benchmarks && $PY object_distance.py nuscenes "$SHARED/nuscenes_keyframe" 256x448 "$MODEL") > "$OUT/distance-nuscenes.txt"
(cd benchmarks && $PY object_distance.py kitti "$SHARED/kitti_000008" 192x608 "$MODEL") > "$OUT/distance-kitti.txt"
(cd benchmarks && PERCEPTION_SHARED_DATA="$SHARED" $PY depth_by_camera.py "$MODEL") > "$OUT/depth-by-camera.md"
$PY benchmarks/dashcam_agreement.py --model "$MODEL" --calib data/rigs/dashcam_1280x720.yaml \
    --out "$OUT/dashcam-calibrated" > "$OUT/dashcam-calibrated.json"
$PY benchmarks/dashcam_agreement.py --model "$MODEL" --out "$OUT/dashcam-uncalibrated" > "$OUT/dashcam-uncalibrated.json"
