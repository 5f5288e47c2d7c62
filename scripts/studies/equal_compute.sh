#!/usr/bin/env bash
# Study: selection at equal compute (issue 12; Kaddour et al. 2023). Traditional, SB (beta=2),
# Stale-SB (n=3) and the random control at SB's rate, each with a linear schedule that decays to 0
# exactly when its work budget is spent: budget.amount = 2.5, 5 and 10 Traditional-epoch
# equivalents, i.e. 25%, 50% and 100% of spikes.sh's 10-epoch runs (work = scoring forwards x 1 +
# backprops x 3, the paper's cost ratio). Final error with 95% CIs per budget:
# OUT/figures/equal_compute. 36 runs, 210 Traditional epochs of work in all.
source "$(dirname "$0")/common.sh"
sweep equal_compute sampler=traditional,sb,stale_sb,random beta=2 schedule=linear budget.unit=work \
      budget.amount=2.5,5,10 bn_recalibrate=0
"$SBRUN_PLOT" "$OUT/multirun/equal_compute" -o "$OUT/figures/equal_compute" \
              --only tables,error_vs_backprops,time_to_accuracy,budget
PYTHON=${PYTHON:-$(dirname "$SBRUN")/python}
"$PYTHON" scripts/studies/summarize.py "$OUT/figures/equal_compute/runs.csv" --columns budget_amount \
    | tee "$OUT/figures/equal_compute/summary.md"
