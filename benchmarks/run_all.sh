#!/usr/bin/env bash
# Every figure in docs/benchmarks.md, in one run on one machine (about 15 minutes on 2 cores).
# Run on a quiet machine: pause other jobs first (kill -STOP PID ... kill -CONT PID).
#   benchmarks/run_all.sh [OUT_DIR]        (default runs/bench)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/bench}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"; uname -a; lscpu | grep -E "Model name|^CPU\(s\)|Flags" | cut -c1-200
  $PY -c "import torch, onnxruntime, cv2, numpy; print('torch', torch.__version__, '| onnxruntime', onnxruntime.__version__, '| opencv', cv2.__version__, '| numpy', numpy.__version__)"
  uptime
} > "$OUT/machine.txt"
# the network, train vs fused form (fp32, batch 6, 256x448)
$PY -m perception bench model --model rep-s --iters 24 --compare builtin:repvgg-a0 --out "$OUT/model-rep-s.json" | tee "$OUT/model-rep-s.txt"
$PY -m perception bench model --model rep-n --iters 24 --out "$OUT/model-rep-n.json" | tee "$OUT/model-rep-n.txt"
# render speed of the synthetic world
$PY benchmarks/synth_speed.py --threads 2 --size 256x448 --frames 20 --json "$OUT/synth.json" | tee "$OUT/synth.txt"
# the pipeline end to end (six cameras rep-n; rendering off; one 1280x720 dashcam rep-s)
$PY -m perception bench pipeline --frames 60 --out "$OUT/pipeline.json" | tee "$OUT/pipeline.txt"
# backends (torch eager / compile / ORT fp32 / ORT INT8), batch 1 and 6
$PY benchmarks/backends.py speed --model qarep-s --batches 1,6 --size 256x448 --out "$OUT/backends.json" | tee "$OUT/backends.txt"
uptime >> "$OUT/machine.txt"
