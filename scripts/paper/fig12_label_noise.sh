#!/usr/bin/env bash
# Fig. 12: SB vs Traditional on CIFAR-10 with 1%, 10% and 20% of training labels corrupted, and
# the share of mislabeled examples among SB's backprops.
source "$(dirname "$0")/common.sh"
main_cifar10                                           # the 0% panel
sweep cifar10_noise experiment=paper_cifar10 sampler=traditional,sb label_noise=0.01,0.1,0.2 "seed=$SEEDS"
plot fig12 label_noise,selected_images,selection_counts cifar10_main cifar10_noise
