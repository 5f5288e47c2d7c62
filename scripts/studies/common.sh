# Shared by the study scripts (source it). Real MNIST on a CPU, the small CNN (width 16, SGD lr
# 0.05), a fixed training subset and the full test set.
#
#   DATA_DIR=../shared/data   MNIST in torchvision's layout (MNIST/raw/...)
#   OUT=results/studies       sweeps in OUT/multirun/<name>, figures and tables in OUT/figures/<study>
#   SUBSET=20000              training examples (a fixed, seeded subset; 60000 = all, 3x the time)
#   SEEDS=0,1,2               seeds per configuration (95% CIs need at least 3)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DATA_DIR=${DATA_DIR:-../shared/data}
OUT=${OUT:-results/studies}
SUBSET=${SUBSET:-20000}
SEEDS=${SEEDS:-0,1,2}
SBRUN=${SBRUN:-$(command -v sbrun || echo .venv/bin/sbrun)}
SBRUN_PLOT=${SBRUN_PLOT:-$(command -v sbrun-plot || echo .venv/bin/sbrun-plot)}
COMMON=(dataset=mnist "data_dir=$DATA_DIR" "dataset.subset=$SUBSET" model=cnn model.width=16 optim.lr=0.05
        "out_dir=$OUT" progress=off "seed=$SEEDS")

sweep() {
    local name=$1 t0=$SECONDS; shift
    echo "== sweep $name: $*"
    "$SBRUN" --multirun "name=$name" "${COMMON[@]}" "$@"
    echo "== sweep $name done in $((SECONDS - t0)) s"
}
