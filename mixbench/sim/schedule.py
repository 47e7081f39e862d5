"""The learning-rate schedule of the simulator, as multipliers of the peak learning rate.

The cosine schedule is the harness's (`mixbench.train.harness.warmup_cosine`): step s
(counted from 0) has the multiplier (s + 1) / warmup during warmup, then a cosine decay from 1
to `min_lr_ratio` at the last step, after which it stays there. The "constant" schedule keeps
the multiplier at 1 after the same warmup.
"""

import math
from dataclasses import dataclass

import numpy as np

from mixbench.errors import ConfigError

SCHEDULE_KINDS = ("cosine", "constant")


@dataclass(frozen=True)
class LRSchedule:
    """A learning-rate schedule. `warmup_steps=None` means 10% of the run, rounded down."""

    kind: str = "cosine"
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.1

    def __post_init__(self):
        if self.kind not in SCHEDULE_KINDS:
            raise ConfigError(f"unknown lr_schedule {self.kind!r}; use one of {', '.join(SCHEDULE_KINDS)}.")
        if self.warmup_steps is not None and (not isinstance(self.warmup_steps, (int, np.integer)) or self.warmup_steps < 0):
            raise ConfigError(f"warmup_steps must be a non-negative integer or None, got {self.warmup_steps!r}.")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}.")

    def warmup_for(self, total_steps: int) -> int:
        """Return the number of warmup steps in a run of `total_steps` steps."""
        return total_steps // 10 if self.warmup_steps is None else int(self.warmup_steps)

    def scale(self, step: int, total_steps: int) -> float:
        """Return the multiplier of optimizer step `step` (0-based) in a run of `total_steps` steps."""
        warmup = self.warmup_for(total_steps)
        if step < warmup:
            return (step + 1) / warmup
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def scales(self, total_steps: int) -> np.ndarray:
        """Return the multipliers of every step of a run, after checking that `total_steps` fits the warmup."""
        if not isinstance(total_steps, (int, np.integer)) or isinstance(total_steps, bool) or total_steps < 1:
            raise ConfigError(f"total_steps must be a positive integer, got {total_steps!r}.")
        if self.warmup_for(total_steps) > total_steps:
            raise ConfigError(f"warmup_steps={self.warmup_steps} is longer than the run of total_steps={total_steps}.")
        return np.array([self.scale(step, total_steps) for step in range(total_steps)])
