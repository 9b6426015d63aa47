#!/usr/bin/env bash
# Regenerate the pipeline images of README.md, docs/pipeline.md and models/rep-s/README.md with
# the shipped rep-s (a few minutes on 2 CPU cores):
#   docs/images/make_images.sh
# demo_frame.png: frame 60 of `perception demo` (the embedded synthetic drive);
# dashcam_frame.jpg: frame 25 of `perception run` on the shared dashcam clip (needs ../shared/data
# or PERCEPTION_SHARED_DATA; skipped without it). The synthetic-world images (synth_*.png) come
# from docs/synthetic.md's commands, serve.png from docs/pipeline.md's.
set -euo pipefail
cd "$(dirname "$0")/../.."
P=${PERCEPTION:-.venv/bin/perception}
PY=${PYTHON:-.venv/bin/python}
SHARED=${PERCEPTION_SHARED_DATA:-../shared/data}
OUT=runs/images
frame() {  # frame VIDEO INDEX DEST: write one frame of an mp4 as an image
    "$PY" - "$@" <<'PY'
import sys, cv2
cap = cv2.VideoCapture(sys.argv[1]); cap.set(cv2.CAP_PROP_POS_FRAMES, int(sys.argv[2]))
ok, img = cap.read()
if not ok:
    sys.exit(f"{sys.argv[1]}: no frame {sys.argv[2]}")
cv2.imwrite(sys.argv[3], img, [cv2.IMWRITE_JPEG_QUALITY, 85])
print("wrote", sys.argv[3])
PY
}
$P demo --out "$OUT/demo" -n 61
frame "$OUT/demo/video.mp4" 60 docs/images/demo_frame.png
if [ -f "$SHARED/dashcam/test_video.mp4" ]; then
    $P run --source "$SHARED/dashcam/test_video.mp4" --calib data/rigs/dashcam_1280x720.yaml --out "$OUT/dashcam" -n 26
    frame "$OUT/dashcam/video.mp4" 25 docs/images/dashcam_frame.jpg
    cp docs/images/dashcam_frame.jpg models/rep-s/dashcam_frame.jpg
else
    echo "no $SHARED/dashcam/test_video.mp4: dashcam_frame.jpg left as it is" >&2
fi
