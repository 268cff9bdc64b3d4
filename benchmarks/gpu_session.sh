#!/usr/bin/env bash
# The GPU checks and measurements, for a session that is lent a GPU through the device tool
# (30 minutes of device time, 10 minutes a command). No GPU was lent in sessions 1-4, so this
# script has not yet run on one. There are three stages:
#
#   bash benchmarks/gpu_session.sh prep
#       Run here. It copies the MNIST cache, compressed (~11 MB), into .gpu/ (git-ignored).
#   device run, carry [".gpu"]:  bash benchmarks/gpu_session.sh check
#       tests/test_cuda.py, then throughput.py in fp32, bf16 and bf16 + --compile.
#   device run, carry [".gpu"]:  bash benchmarks/gpu_session.sh train [extra train flags]
#       The H100 target: tf-dcgan's full 100-epoch recipe, timed (capped at 8 minutes).
#
# The device machine has its own python3 with torch and cannot reach PyPI, so the package is
# used from src/ (PYTHONPATH) instead of being installed. Results are written under $OUT;
# copy them into benchmarks/results/ and the README.
set -uo pipefail
cd "$(dirname "$0")/.."
stage=${1:-}
shift || true

if [ "$stage" = prep ]; then
    mkdir -p .gpu
    .venv/bin/python - <<'EOF'
import numpy as np
from mnistgan.data import cache_path
with np.load(cache_path()) as d:
    np.savez_compressed(".gpu/mnist.npz", **{k: d[k] for k in d.files})
print("wrote .gpu/mnist.npz; carry it with [\".gpu\"]")
EOF
    exit
fi

export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 MNISTGAN_HOME=$PWD/.gpu
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
info() {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
}

case "$stage" in
check)
    info | tee "$OUT/gpu-info.txt"
    $PY -m pytest -q tests/test_cuda.py 2>&1 | tee "$OUT/test-cuda.log"
    for v in "fp32:" "bf16:" "bf16:--compile"; do
        p=${v%%:*} flags=${v#*:}
        name=throughput-cuda-$p${flags:+-compile}.json
        $PY benchmarks/throughput.py --device cuda --precision "$p" $flags --out "$OUT/$name"
    done
    ;;
train)
    info
    $PY -m mnistgan train --preset tf-dcgan --device cuda --precision bf16 --eval-every 0 \
        --sample-every 0 --max-minutes 8 --run-dir /tmp/tf-dcgan-100 "$@" 2>&1 |
        tee "$OUT/tf-dcgan-100.log"
    cp /tmp/tf-dcgan-100/run.json "$OUT/tf-dcgan-100-run.json"
    ;;
*)
    echo "usage: bash benchmarks/gpu_session.sh prep|check|train [train flags]" >&2
    exit 2
    ;;
esac
