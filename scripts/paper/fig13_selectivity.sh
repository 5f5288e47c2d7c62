#!/usr/bin/env bash
# Fig. 13: selectivity sweep on CIFAR-10: SB at beta 1, 2, 3, 4 (50%, 33%, 25%, 20% expected
# backprops); final error and time to 1.2x Traditional's final error against selectivity.
source "$(dirname "$0")/common.sh"
main_cifar10                                           # Traditional and SB beta=2
sweep cifar10_selectivity experiment=paper_cifar10 sampler=sb beta=1,3,4 "seed=$SEEDS"
plot fig13 selectivity,time_to_accuracy cifar10_main cifar10_selectivity
