#!/usr/bin/env bash
# The whole GPU part of the benchmark suite in one go (aimed at under 5 minutes on one H200; torch.compile's start-up
# dominates): every script appends its rows to benchmarks/results/<script>.jsonl with the machine, torch version, date
# and command (benchmarks/common.py append_rows).
#
#   benchmarks/run_gpu.sh                 # from the repository root, with a CUDA build of torch
#   PYTHON=/path/to/python benchmarks/run_gpu.sh
#   benchmarks/run_gpu.sh --cpu-check     # the same steps on the CPU with tiny models, eager only, nothing recorded
#
# Needs torch (CUDA) and transformers; the loader and end-to-end figures also need the project's `datasets`, `wfdb`,
# `accelerate` and `pyyaml` (`pip install -e .[train]`): where they are missing those two steps are skipped and say so.
# A step that fails or runs past its time limit does not stop the others; the exit status counts the failures.
set -u
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then [ -x .venv/bin/python ] && PYTHON=.venv/bin/python || PYTHON=python3; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

DEVICE=(--device cuda) COMPILED=eager,compiled TRAIN_BATCH=256 INFER_BATCH=1024 ROWS=8192
if [ "${1:-}" = "--cpu-check" ]; then  # wiring check: every step, tiny and fast
    DEVICE=(--device cpu --small --no-record) COMPILED=eager TRAIN_BATCH=2 INFER_BATCH=2 ROWS=32
elif ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "run_gpu.sh: no CUDA device visible to $PYTHON" >&2
    exit 2
else
    "$PYTHON" -c "import torch; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)"
fi

failures=0
step() {  # step SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2
    shift 2
    echo "=== $what"
    local start=$SECONDS
    timeout "$limit" "$@" || { echo "=== FAILED or timed out ($limit s): $what" >&2; failures=$((failures + 1)); }
    echo "=== $what: $((SECONDS - start)) s"
}
has() { "$PYTHON" -c "import $1" 2>/dev/null; }

step 170 "training step, B=256, bf16 autocast, eager + compiled" \
    "$PYTHON" benchmarks/bench_train_step.py "${DEVICE[@]}" --batch-size $TRAIN_BATCH --modes $COMPILED --steps 15
step 90 "inference, B=1024, bf16 autocast, eager + compiled" \
    "$PYTHON" benchmarks/bench_inference.py "${DEVICE[@]}" --batch-sizes $INFER_BATCH --dtypes bf16-autocast --modes $COMPILED
step 80 "inference, B=1024, bf16 weights, compiled" \
    "$PYTHON" benchmarks/bench_inference.py "${DEVICE[@]}" --batch-sizes $INFER_BATCH --dtypes bf16 --modes ${COMPILED#eager,}
if has datasets && has wfdb && has accelerate && has yaml; then
    if [ -f benchmarks/bench_loader.py ] && [ "${1:-}" != "--cpu-check" ]; then
        step 120 "data loader to the GPU (bench_loader.py)" "$PYTHON" benchmarks/bench_loader.py --device cuda
    fi
    step 150 "end-to-end trainer, B=256, 2 epochs of 8,192 ECGs" \
        "$PYTHON" benchmarks/bench_end_to_end.py "${DEVICE[@]}" --rows $ROWS --batch-size $TRAIN_BATCH --epochs 2
else
    echo "=== skipped the loader and end-to-end figures: $PYTHON lacks datasets / wfdb / accelerate / pyyaml" >&2
    failures=$((failures + 1))
fi
echo "run_gpu.sh: done, $failures step(s) failed or skipped; rows are in benchmarks/results/*.jsonl"
exit "$failures"
