#!/usr/bin/env bash
# Fig. 1: where training time goes (backward, selection forward, training forward, other) until
# a common target error, for Traditional, SB, Stale-SB and Kath18 on CIFAR-10.
source "$(dirname "$0")/common.sh"
main_cifar10
plot fig01 time_breakdown cifar10_main
