#!/usr/bin/env bash
# Fig. 4: SB's selection probability against loss percentile for several beta. Analytic (drawn
# through sbrun.samplers.rules); sbrun-plot still reads one sweep for the betas actually run.
source "$(dirname "$0")/common.sh"
main_cifar10
plot fig04 selection_probability cifar10_main
