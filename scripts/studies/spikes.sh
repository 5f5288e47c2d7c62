#!/usr/bin/env bash
# Study: SB's test-error spikes after priming, and batch normalisation (issue 12). SB beta=2 for
# 10 epochs (lr 0.05 / 5 at epochs 6 and 8) scoring in eval mode (the authors'), in train mode
# (Composer, RHO-LOSS: batch-norm statistics update on every scored example), and in eval mode with
# batch-norm statistics re-estimated on 2048 training examples before each evaluation; Traditional
# as the reference. Figures and tables: OUT/figures/spikes (worst error after priming: results.md's
# best/worst columns, and the per-epoch curves). bn_recalibrate=0 is explicit because the MNIST
# recipe re-estimates the statistics by default (docs/configuration.md, Recipes).
source "$(dirname "$0")/common.sh"
SCHEDULE=(schedule=multistep "schedule.milestones=[6,8]" schedule.gamma=0.2 epochs=10)
sweep spikes_sb sampler=sb beta=2 "${SCHEDULE[@]}" selection_forward=eval,train bn_recalibrate=0
sweep spikes_recal sampler=sb beta=2 "${SCHEDULE[@]}" bn_recalibrate=2048
sweep spikes_trad sampler=traditional "${SCHEDULE[@]}" bn_recalibrate=0
"$SBRUN_PLOT" "$OUT/multirun/spikes_sb" "$OUT/multirun/spikes_recal" "$OUT/multirun/spikes_trad" \
              -o "$OUT/figures/spikes" --only tables,error_vs_epochs,time_to_accuracy
PYTHON=${PYTHON:-$(dirname "$SBRUN")/python}
"$PYTHON" scripts/studies/summarize.py "$OUT/figures/spikes/runs.csv" --worst-after 1 | tee "$OUT/figures/spikes/summary.md"
