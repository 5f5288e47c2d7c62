#!/usr/bin/env bash
# Fig. 6: test error against the number of backpropagated examples: Traditional, SB, Kath18
# (and Stale-SB) on CIFAR-10, CIFAR-100 and SVHN.
source "$(dirname "$0")/common.sh"
main_cifar10
main_cifar100
main_svhn
plot fig06 error_vs_backprops,error_vs_epochs cifar10_main cifar100_main svhn_main
