#!/usr/bin/env bash
# Fig. 10 (appendix): time breakdown to a common target for the other CIFAR-10 networks
# (ResNet-18, DenseNet, MobileNetV2 at lr 0.1): Traditional, SB and Stale-SB. One file per model.
source "$(dirname "$0")/common.sh"
# dataset=cifar10 is the paper's CIFAR-10 recipe (crop+flip+cutout 16, lr 0.1 / 5 at 60/120/160);
# experiment=paper_cifar10 would add WRN-28-10's depth/width keys, which these models do not take.
sweep cifar10_models dataset=cifar10 model=resnet18,densenet,mobilenetv2 beta=2 hours=12 \
      sampler=traditional,sb,stale_sb "seed=$SEEDS"
plot fig10 time_breakdown,time_to_accuracy cifar10_models
