#!/usr/bin/env bash
# Fig. 2: the CIFAR-10 training images SB backpropagated most and least often, plus the
# histogram of per-example selection counts.
source "$(dirname "$0")/common.sh"
main_cifar10
plot fig02 selected_images,selection_counts cifar10_main
