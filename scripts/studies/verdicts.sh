#!/usr/bin/env bash
# The equal-compute verdict study on real MNIST (issue 19): sbrun-compare with every method tuned
# on a validation split, at 4 work budgets and 5 seeds, on clean labels and at 20% label noise.
#
#   bash scripts/studies/verdicts.sh            # both conditions; re-running skips finished jobs
#   NOISES="0" bash scripts/studies/verdicts.sh # clean labels only
#   METHODS="traditional sb" WORKERS=1 ...      # other methods; sweeps at once
#
#   DATA_DIR=../shared/data  SUBSET=5000 (training examples before the 10% validation split)
# Outputs: results/studies/multirun/verdicts_noise<r>/ (the runs) and
#          results/studies/compare/verdicts_noise<r>/ (verdict.md, comparison.csv, pareto.png, ...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DATA_DIR=${DATA_DIR:-../shared/data}
SUBSET=${SUBSET:-5000}
NOISES=${NOISES:-"0 0.2"}
PY=${PY:-$(test -x .venv/bin/python && echo .venv/bin/python || echo python)}
SBRUN_COMPARE=${SBRUN_COMPARE:-"$PY -m sbrun.compare"}
# sb_random: the SB-matched random control; sb_proxy, proxy_topk: proxy-scored (issue 23)
read -r -a METHODS <<< "${METHODS:-traditional sb stale_sb sb_random infobatch rs2 sb_proxy proxy_topk}"
WORKERS=${WORKERS:-2}    # sweeps at once, methods split between them
COSTS=results/studies/compare/costs.json   # measured once, shared by both conditions

for noise in $NOISES; do
    name=verdicts_noise$noise
    t0=$SECONDS
    if [ -f "$COSTS" ]; then costs=$COSTS; else costs=measure; fi
    $SBRUN_COMPARE "$name" --methods "${METHODS[@]}" --budgets 2 3 4 8 --seeds 0 1 2 3 4 \
        --lrs 0.01 0.02 0.05 --tune-budget 4 --tune-seeds 0 1 2 --costs "$costs" --out-dir results/studies --workers "$WORKERS" -- \
        dataset=mnist "data_dir=$DATA_DIR" "dataset.subset=$SUBSET" model=cnn model.width=16 "label_noise=$noise"
    measured=results/studies/compare/$name/costs.json
    if [ ! -f "$COSTS" ] && [ -f "$measured" ]; then cp "$measured" "$COSTS"; fi
    echo "== $name done in $((SECONDS - t0)) s"
done
