#!/usr/bin/env bash
# Every paper figure and table, then one sbrun-plot over all sweeps into $OUT/figures/all.
# Sweeps are shared by name, so each is trained once. See common.sh for SEEDS/OUT/EXTRA.
source "$(dirname "$0")/common.sh"
here=scripts/paper
for s in table1_speedup table1_budget_matched fig01_time_breakdown fig02_selected_images fig03_loss_cdf fig04_selection_probability \
         fig06_error_vs_backprops fig07_time_to_accuracy fig10_time_breakdown_models fig11_staleness \
         fig12_label_noise fig13_selectivity; do
    bash "$here/$s.sh"
done
"$SBRUN_PLOT" "$OUT/multirun" -o "$OUT/figures/all"
