"""Learning-rate schedule as a pure function of training position."""
from __future__ import annotations

import bisect
from typing import Sequence


def multistep_lr(position: float, base: float, milestones: Sequence[float], gamma: float) -> float:
    """base * gamma ** (number of milestones <= position).

    `position` is in epochs: by default the epochs of data passed through selection (what the SB
    authors' runs used); with schedule.by=backprops, backpropagated examples / training-set size.
    """
    return base * gamma ** bisect.bisect_right(list(milestones), position)
