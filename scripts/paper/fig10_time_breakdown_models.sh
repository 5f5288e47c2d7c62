#!/usr/bin/env bash
# Fig. 10 (appendix): time breakdown to a common target for the other CIFAR-10 networks
# (ResNet-18, DenseNet, MobileNetV2 at lr 0.1): Traditional, SB and Stale-SB. One file per model.
source "$(dirname "$0")/common.sh"
sweep cifar10_models experiment=paper_cifar10 model=resnet18,densenet,mobilenetv2 \
      sampler=traditional,sb,stale_sb "seed=$SEEDS"
plot fig10 time_breakdown,time_to_accuracy cifar10_models
