#!/usr/bin/env bash
# Fig. 3: CDF of per-example losses at evenly spaced epochs (loss_snapshots), per sampler, CIFAR-10.
source "$(dirname "$0")/common.sh"
main_cifar10
plot fig03 loss_cdf cifar10_main
