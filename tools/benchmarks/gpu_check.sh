#!/usr/bin/env bash
# The GPU checks of the training stack, as one script (for a machine with CUDA):
#   bash tools/benchmarks/gpu_check.sh [OUT_DIR] [SECONDS]    (from the repository root, cyclecmda importable)
# 1. the CUDA-marked tests (training in fp32/bf16/fp16 and resuming on CUDA, no host
#    synchronisation between logging steps, augmentation on CUDA tensors);
# 2. tools/benchmarks/bench_train.py at 256x256 (resnet_9blocks, ngf 64) for fp32, bf16, bf16+channels_last
#    and bf16+channels_last+compile at batch 1 and 8;
# 3. the quickstart config trained on the GPU, timed as a user runs it;
# 4. the 2-process DDP test over NCCL when two GPUs exist.
# Results land in OUT_DIR (default: gpu_check/). SECONDS (default 1200) bounds the whole script:
# a stage that would not fit in what is left is skipped and says so.
set -uo pipefail
out=${1:-gpu_check}
budget=${2:-1200}
mkdir -p "$out"
: > "$out/summary.txt"
start=$SECONDS
repo=$(pwd)
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore

left() { echo $((budget - (SECONDS - start))); }
stage() {  # stage NAME SECONDS_NEEDED COMMAND: run COMMAND under a timeout of what is left, or skip it
  local name=$1 need=$2 cmd=$3
  if [ "$(left)" -lt "$need" ]; then
    echo "== $name: skipped ($(left) s left, needs $need s)" | tee -a "$out/summary.txt"
    return
  fi
  local t0=$SECONDS
  timeout "$(left)" bash -o pipefail -c "$cmd"
  echo "== $name: exit $? after $((SECONDS - t0)) s" | tee -a "$out/summary.txt"
}
bench() {  # bench BATCH OPTIONS SECONDS_PER_OPTION FILE
  python3 tools/benchmarks/bench_train.py configs/default.yaml data.crop_size=256 data.batch_size="$1" \
    --options "$2" --steps 20 --warmup 5 --timeout "$3" > "$out/$4" 2> "$out/$4.err"
  cat "$out/$4"
}
quickstart() {  # the quickstart config as a user runs it (from an empty folder), on the GPU
  local qs=/tmp/gpu_check_quickstart log
  log="$(cd "$out" && pwd)/quickstart.log"
  rm -rf "$qs" && mkdir -p "$qs"
  (cd "$qs" && python3 -m cyclecmda train "$repo/configs/quickstart.yaml" run.device=cuda) > "$log" 2>&1
  local rc=$?
  grep -vE "^step [0-9]+/" "$log" | tail -6
  grep -E "^step (500|1000|1500)/" "$log"
  return $rc
}
export -f bench quickstart
export out repo

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())" \
  | tee -a "$out/gpu.txt"

stage "pytest -m gpu" 60 "python3 -m pytest -m gpu -q -p no:cacheprovider 2>&1 | tee $out/pytest_gpu.txt | tail -15"
stage "bench 256 batch 1" 60 "bench 1 fp32,bf16,bf16_cl 60 bench_256_b1.json"
stage "bench 256 batch 8" 60 "bench 8 fp32,bf16,bf16_cl 60 bench_256_b8.json"
stage "bench 256 batch 8 compile" 90 "bench 8 bf16_cl_compile 240 bench_256_b8_compile.json"
stage "bench 256 batch 1 compile" 90 "bench 1 bf16_cl_compile 240 bench_256_b1_compile.json"
stage "quickstart on cuda" 60 quickstart
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  stage "DDP over NCCL" 60 "CYCLECMDA_TEST_DDP_DEVICE=cuda python3 -m pytest -q -p no:cacheprovider tests/test_distributed.py 2>&1 | tee $out/pytest_ddp.txt | tail -5"
else
  echo "== DDP over NCCL: skipped (one GPU)" | tee -a "$out/summary.txt"
fi
echo "== summary"
cat "$out/summary.txt"
