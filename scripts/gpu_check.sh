#!/usr/bin/env bash
# One command that checks sbrun's GPU path and writes everything under OUT_DIR:
#   env.txt            GPU name, driver (nvidia-smi), torch, CUDA and cuDNN versions, CPU
#   pytest-gpu.xml/.log  pytest -m gpu (tests/test_gpu.py)
#   bench/             sbrun-bench --preset gpu (bench.md, bench.csv, scoring.csv, costs.json)
#   torchrun/          a 1-process torchrun run of sbrun on the GPU, and an NCCL smoke test
#   summary.txt        one line per step: ok / FAILED / TIMED OUT / SKIPPED, with its time
# It finishes within 9 minutes on one H100: every step runs under `timeout`, inside one overall
# deadline (GPU_CHECK_SECONDS, default 500 s; a step may overrun it by a 5 s kill grace).
# Without CUDA it runs the CPU-safe parts (environment, collecting the GPU tests, which all skip,
# and a seconds-long bench smoke run), says which GPU parts it skipped, and exits 0, so CI can
# check that it does not rot.
# Exit status: 0 when every step that ran passed, 1 otherwise, 2 on bad usage.
#
# usage: bash scripts/gpu_check.sh OUT_DIR        (PYTHON=... picks the interpreter)
set -uo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: bash scripts/gpu_check.sh OUT_DIR" >&2
  exit 2
fi
mkdir -p "$1" 2>/dev/null && OUT=$(cd "$1" && pwd) || { echo "gpu_check: cannot create OUT_DIR $1" >&2; exit 2; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! HAS_CUDA=$("$PYTHON" -c "import sbrun.bench.cli, torch; print(int(torch.cuda.is_available()))" 2>"$OUT/import.log"); then
  echo "gpu_check: $PYTHON cannot import sbrun (see $OUT/import.log); install it with pip install -e '.[test]'" >&2
  exit 2
fi
rm -f "$OUT/import.log"

START=$(date +%s)
DEADLINE=$((START + ${GPU_CHECK_SECONDS:-500}))
SUMMARY=()
FAILED=0

# run NAME SECONDS RESERVE LOG CMD...: run CMD (a program, or one of this script's functions) with
# at most SECONDS, leaving RESERVE seconds of the deadline to the steps after it; output to LOG.
run() {
  local name=$1 budget=$2 reserve=$3 log=$4
  shift 4
  local left=$((DEADLINE - $(date +%s) - reserve))
  local limit=$((budget < left ? budget : left))
  if [ "$limit" -lt 10 ]; then
    SUMMARY+=("$(printf '%-10s %-34s' "$name" "SKIPPED: no time left")")
    FAILED=1
    return 1
  fi
  local t0 rc status
  t0=$(date +%s)
  echo "== $name (at most ${limit}s) -> $log"
  if declare -F "$1" >/dev/null; then set -- bash -c "$*"; fi    # timeout runs programs only
  timeout -k 5 "$limit" "$@" >"$log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status="TIMED OUT after ${limit}s"; FAILED=1 ;;
    *) status="FAILED (exit $rc)"; FAILED=1 ;;
  esac
  SUMMARY+=("$(printf '%-10s %-34s %4ss  %s' "$name" "$status" "$(($(date +%s) - t0))" "$log")")
  return $rc
}

skip() {
  SUMMARY+=("$(printf '%-10s %-34s' "$1" "SKIPPED: $2")")
}

# --- environment ---------------------------------------------------------------------------------
environment() {
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(hostname)"
  echo "git: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ //') x $(nproc --all)"
  "$PYTHON" - <<'EOF'
import platform, torch
print(f"python: {platform.python_version()}")
print(f"torch: {torch.__version__}")
print(f"torch built with CUDA: {torch.version.cuda}")
print(f"cuDNN: {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}")
print(f"CUDA available: {torch.cuda.is_available()}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"GPU {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}")
print(f"NCCL: {'.'.join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None}")
EOF
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv
    nvidia-smi
  else
    echo "nvidia-smi: not found (no NVIDIA driver on this machine)"
  fi
}
export -f environment
export PYTHON OUT
run env 20 480 "$OUT/env.txt" environment
if [ "$HAS_CUDA" != 1 ]; then
  echo "gpu_check: no CUDA GPU visible: running the CPU-safe parts only (the GPU tests skip)"
fi

# --- the GPU tests -------------------------------------------------------------------------------
run pytest 200 280 "$OUT/pytest-gpu.log" \
  "$PYTHON" -m pytest -m gpu tests/test_gpu.py -q -rs -p no:cacheprovider --junitxml="$OUT/pytest-gpu.xml"

# --- the benchmark -------------------------------------------------------------------------------
if [ "$HAS_CUDA" = 1 ]; then
  # Rounds stop after 120 s (the tables keep every finished round); the rest is set-up and warm-up.
  run bench 210 70 "$OUT/bench.log" \
    "$PYTHON" -m sbrun.bench --preset gpu --repeats 3 --time-limit 120 --out "$OUT/bench"
else
  skip bench "no CUDA GPU (sbrun-bench --preset gpu)"
  run bench-cpu 120 0 "$OUT/bench-smoke.log" \
    "$PYTHON" -m sbrun.bench --preset smoke --repeats 1 --cost-reps 3 --loader-workers 0 --scoring none \
    --out "$OUT/bench-smoke"
fi

# --- torchrun ------------------------------------------------------------------------------------
# sbrun under torchrun on the GPU, then NCCL itself: with one process sbrun runs without a process
# group (distributed.launched_by_torchrun needs WORLD_SIZE > 1), so the smoke test builds a
# 1-rank NCCL group through sbrun.distributed and takes a DDP step on it.
nccl_smoke() {
  cat >"$OUT/torchrun/nccl_smoke.py" <<'EOF'
import torch, torch.distributed as dist
from sbrun.distributed import init_process_group, local_rank
init_process_group(torch.device("cuda"))
t = torch.full((4,), float(dist.get_rank() + 1), device="cuda")
dist.all_reduce(t)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 2).cuda(), device_ids=[local_rank()])
model(torch.randn(16, 8, device="cuda")).sum().backward()
print(f"NCCL smoke: backend={dist.get_backend()} world={dist.get_world_size()} all_reduce={t.tolist()} "
      f"DDP grad norm={model.module.weight.grad.norm().item():.4f}")
dist.destroy_process_group()
EOF
  NCCL_DEBUG=INFO "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 "$OUT/torchrun/nccl_smoke.py"
}
if [ "$HAS_CUDA" = 1 ]; then
  mkdir -p "$OUT/torchrun"
  export -f nccl_smoke
  run torchrun 50 20 "$OUT/torchrun/sbrun.log" \
    "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 -m sbrun \
      dataset=synthetic dataset.channels=3 dataset.image_size=32 dataset.n_train=8192 dataset.n_test=1024 \
      dataset.mean=[0.5,0.5,0.5] dataset.std=[0.25,0.25,0.25] model=cnn sampler=sb epochs=2 device=cuda \
      plots=false progress=off out_dir="$OUT/torchrun" name=sbrun
  run nccl 20 0 "$OUT/torchrun/nccl.log" nccl_smoke
else
  skip torchrun "no CUDA GPU (1-process torchrun on cuda)"
  skip nccl "no CUDA GPU (NCCL needs one)"
fi

# --- summary -------------------------------------------------------------------------------------
{
  echo "sbrun GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(($(date +%s) - START)) s in all"
  grep -m1 '^GPU 0:' "$OUT/env.txt" 2>/dev/null || echo "GPU: none (CUDA not available): the GPU parts were skipped"
  printf '%s\n' "${SUMMARY[@]}"
  if [ -f "$OUT/pytest-gpu.xml" ]; then
    "$PYTHON" - "$OUT/pytest-gpu.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
s = root if root.tag == "testsuite" else root.find("testsuite")
print(f"GPU tests: {s.get('tests')} collected, {s.get('failures')} failed, {s.get('errors')} errors, "
      f"{s.get('skipped')} skipped")
EOF
  fi
  if [ -f "$OUT/bench/bench.md" ]; then
    echo
    cat "$OUT/bench/bench.md"
  fi
  grep -h "NCCL smoke:" "$OUT/torchrun/nccl.log" 2>/dev/null
} | tee "$OUT/summary.txt"
exit $FAILED
