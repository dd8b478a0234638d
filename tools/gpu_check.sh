#!/usr/bin/env bash
# The GPU checks of the training stack, as one script (for a machine with CUDA):
#   bash tools/gpu_check.sh [OUT_DIR]
# 1. the CUDA-marked tests; 2. tools/bench_train.py at 256x256 (resnet_9blocks, ngf 64) for
# fp32, bf16, bf16+channels_last, bf16+channels_last+compile at batch 1 and 8; 3. the 2-process
# DDP test over NCCL when two GPUs exist. Results land in OUT_DIR (default: gpu_check/).
set -uo pipefail
out=${1:-gpu_check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -m pytest -m gpu -q 2>&1 | tail -5 | tee "$out/pytest_gpu.txt"
for batch in 1 8; do
  python tools/bench_train.py configs/default.yaml data.crop_size=256 data.batch_size=$batch \
    --options fp32,bf16,bf16_cl,bf16_cl_compile --steps 20 --warmup 5 > "$out/bench_train_256_b$batch.json" \
    2> "$out/bench_train_256_b$batch.err"
  cat "$out/bench_train_256_b$batch.json"
done
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  CYCLECMDA_TEST_DDP_DEVICE=cuda python -m pytest -q tests/test_distributed.py 2>&1 | tail -5 | tee "$out/pytest_ddp.txt"
fi
