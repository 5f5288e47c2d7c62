#!/usr/bin/env bash
# Fig. 7: test error against training wall-clock time (evaluation excluded): Traditional, SB,
# Stale-SB and Kath18 on CIFAR-10, CIFAR-100 and SVHN.
source "$(dirname "$0")/common.sh"
main_cifar10
main_cifar100
main_svhn
plot fig07 time_to_accuracy cifar10_main cifar100_main svhn_main
