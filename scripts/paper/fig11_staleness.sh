#!/usr/bin/env bash
# Fig. 11: test error against forward passes for staleness 1 (SB), 2 and 3 (Stale-SB), CIFAR-10.
source "$(dirname "$0")/common.sh"
main_cifar10                                           # SB (n=1), Stale-SB n=3, Traditional
sweep cifar10_staleness experiment=paper_cifar10 sampler=stale_sb sampler.staleness=2 "seed=$SEEDS"
plot fig11 staleness cifar10_main cifar10_staleness
