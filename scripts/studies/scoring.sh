#!/usr/bin/env bash
# Study: cheaper scoring forwards (issue 13). SB beta=2 as in spikes.sh (10 epochs, lr 0.05 / 5 at
# epochs 6 and 8) with the scoring forward on inputs downsampled to half their side
# (scoring.scale=0.5) or in bf16 autocast (scoring.precision=bf16); the full-cost SB runs are
# spikes.sh's spikes_sb (selection_forward=eval). What each option saves per scoring forward is
# measured by sbrun-bench (docs/performance.md); this gives its accuracy effect.
source "$(dirname "$0")/common.sh"
SCHEDULE=(schedule=multistep "schedule.milestones=[6,8]" schedule.gamma=0.2 epochs=10)
sweep scoring_scale sampler=sb beta=2 "${SCHEDULE[@]}" scoring.scale=0.5 bn_recalibrate=0
sweep scoring_bf16 sampler=sb beta=2 "${SCHEDULE[@]}" scoring.precision=bf16 bn_recalibrate=0
"$SBRUN_PLOT" "$OUT/multirun/spikes_sb" "$OUT/multirun/scoring_scale" "$OUT/multirun/scoring_bf16" \
              -o "$OUT/figures/scoring" --only tables,error_vs_epochs
PYTHON=${PYTHON:-$(dirname "$SBRUN")/python}
"$PYTHON" scripts/studies/summarize.py "$OUT/figures/scoring/runs.csv" --worst-after 1 | tee "$OUT/figures/scoring/summary.md"
