#!/usr/bin/env bash
# Table 1, budget-matched: the comparison a skeptical reviewer asks for (Kaddour et al. 2023,
# "No Train No Gain"). Every method gets the same compute budget in `work` units (Traditional-epoch
# equivalents: selection forwards x cost_select + backprops x cost_train, over N x cost_train) and a
# linear learning-rate schedule that decays fully exactly when that budget is spent, so no method
# looks faster only because its baseline had not finished decaying. `random` at SB's rate is the
# control for "which examples" versus "how many". Final error with 95% CIs at each budget:
# results.md; speedups at equal budget: speedup.md.
#
#   BUDGETS=50,100,200   work budgets in Traditional epochs (the paper trained 200 epochs)
#   COSTS=path.json      costs.json from `sbrun-bench` on this GPU (default: the paper's 1 : 3)
source "$(dirname "$0")/common.sh"
BUDGETS=${BUDGETS:-50,100,200}
COSTS=${COSTS:-}
costs=()
[ -n "$COSTS" ] && costs=("budget.costs=$COSTS")
for setup in cifar10 cifar100 svhn; do
    # hours=null: the 12 h / 96 h caps of the paper's recipes would cut a budget short
    sweep "${setup}_budget" "experiment=paper_${setup}" sampler=traditional,sb,stale_sb,random \
          schedule=linear budget.unit=work "budget.amount=$BUDGETS" hours=null "seed=$SEEDS" "${costs[@]}"
done
plot table1_budget tables,error_vs_backprops,time_to_accuracy cifar10_budget cifar100_budget svhn_budget
