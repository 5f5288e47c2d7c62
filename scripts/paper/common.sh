# Shared by the paper scripts (source it; do not run it). GPU machines only: each CIFAR job trains
# a WRN-28-10 for up to the paper's 12 h budget (SVHN: 96 h).
#
# Environment knobs:
#   SEEDS=0,1,2        seeds per configuration (the figures show the mean and a 95% confidence band)
#   OUT=results/paper  where sweeps (OUT/multirun/<name>) and figures (OUT/figures/<figure>) go
#   EXTRA="..."        extra sbrun overrides for every job, e.g. "hydra/launcher=slurm
#                      hydra.launcher.partition=gpu" or "hydra/launcher=local_parallel"
#   SBRUN_DATA_DIR     dataset folder (torchvision downloads CIFAR/SVHN there on first use)
#
# Every sweep has a stable name, so re-running a script (or another script that shares the sweep)
# resumes unfinished jobs and skips finished ones instead of training again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

SEEDS=${SEEDS:-0,1,2}
OUT=${OUT:-results/paper}
EXTRA=${EXTRA:-}
SBRUN=${SBRUN:-$(command -v sbrun || echo .venv/bin/sbrun)}
SBRUN_PLOT=${SBRUN_PLOT:-$(command -v sbrun-plot || echo .venv/bin/sbrun-plot)}

# sweep NAME OVERRIDES... : one `sbrun --multirun` into $OUT/multirun/NAME.
sweep() {
    local name=$1; shift
    # shellcheck disable=SC2086  # EXTRA is a list of overrides on purpose
    "$SBRUN" --multirun "name=$name" "out_dir=$OUT" progress=off "$@" $EXTRA
}

# plot FIGURE "FIGURE_NAMES" SWEEP_NAMES... : sbrun-plot those sweeps into $OUT/figures/FIGURE.
plot() {
    local figure=$1 only=$2; shift 2
    local dirs=()
    for name in "$@"; do dirs+=("$OUT/multirun/$name"); done
    "$SBRUN_PLOT" "${dirs[@]}" -o "$OUT/figures/$figure" --only "$only"
}

# The main comparison (Table 1, Fig. 1/2/3/6/7): Traditional, SB, Stale-SB (n=3, the authors'
# default) and Kath18 on CIFAR-10 (beta=2), CIFAR-100 (beta=1) and SVHN (beta=3), as in the paper.
main_cifar10()  { sweep cifar10_main  experiment=paper_cifar10  sampler=traditional,sb,stale_sb,kath18 "seed=$SEEDS"; }
main_cifar100() { sweep cifar100_main experiment=paper_cifar100 sampler=traditional,sb,stale_sb "seed=$SEEDS"; }
main_svhn()     { sweep svhn_main     experiment=paper_svhn     sampler=traditional,sb,stale_sb "seed=$SEEDS"; }
