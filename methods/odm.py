"""Online Data Mixing (Albalak et al. 2023): an EXP3 bandit over domains, rewarded by training loss.

After step t (counted from 1) each domain in the batch adds its scaled training loss divided by
its sampling probability to the cumulative reward R, and the next sampling mixture is
pi = (1 - m eps_t) softmax(eps_{t-1} R) + eps_t with eps_t = min(1/m, sqrt(ln m / (m t))), so no
probability falls below eps_t. It reuses the training loss and costs almost nothing.
"""

import numpy as np

from mixbench.backend import StepStats
from mixbench.errors import ConfigError
from mixbench.method import MethodContext, Observation, OnlineMethod, register
from mixbench.simplex import uniform
from methods.doremi import run_length
from methods.updates import add_rewards, exp3_probabilities, exploration_rate


@register
class ODM(OnlineMethod):
    """ODM's EXP3 sampling distribution, updated after every training step from the domains' losses.

    - `reward_scale`: the reward is the domain's mean training loss times this factor (the
      published code divides the loss by 10).

    Its implicit transfer matrix is diag(latest training loss per domain): a domain's reward is
    its own loss, with no transfer between domains.
    """

    name = "odm"
    requires = frozenset()

    def __init__(self, reward_scale: float = 0.1):
        self.reward_scale = reward_scale

    @property
    def round_steps(self) -> int:
        # The step hook moves the mixture; the only round is at step 0.
        return run_length(self)

    def check(self, context: MethodContext) -> None:
        if not self.reward_scale > 0:
            raise ConfigError(f"odm reward_scale={self.reward_scale!r} is invalid; it must be positive.")

    def use_prerequisites(self, observations: list[Observation], context: MethodContext) -> None:
        self.check(context)
        self.total_steps_ = context.total_steps
        self.mixture_ = uniform(context.m)
        self.reward_ = np.zeros(context.m)
        self.rate_ = 1.0 / context.m
        self.train_loss_ = np.full(context.m, np.nan)
        self.A_ = None

    def optimize(self, context: MethodContext) -> np.ndarray:
        return self.mixture_

    def step_hook(self, context: MethodContext) -> "ODM":
        # The method is its own step hook, so the bandit's state is checkpointed with the method.
        return self

    def update(self, stats: StepStats, mixture: np.ndarray) -> np.ndarray | None:
        """Add the step's rewards and return the next sampling mixture; see `StepHook.update`."""
        m = len(mixture)
        losses = np.asarray(stats.train_loss, dtype=np.float64)
        self.reward_ = add_rewards(self.reward_, self.reward_scale * losses, mixture)
        rate = exploration_rate(m, stats.step + 1)
        self.mixture_ = exp3_probabilities(self.reward_, self.rate_, rate)
        self.rate_ = rate
        self.train_loss_ = np.where(np.isnan(losses), self.train_loss_, losses)
        self.A_ = np.diag(np.nan_to_num(self.train_loss_))
        return self.mixture_
