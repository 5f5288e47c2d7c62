#!/usr/bin/env bash
# Table 1: speedup over Traditional in training time to 1.1x, 1.2x and 1.4x Traditional's final
# test error, on CIFAR-10, CIFAR-100 and SVHN. Writes speedup.md/.csv (also printed).
source "$(dirname "$0")/common.sh"
main_cifar10
main_cifar100
main_svhn
plot table1 tables cifar10_main cifar100_main svhn_main
