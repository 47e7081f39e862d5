"""DoGE (Fan et al. 2024): domain weights from the alignment of domain gradients with a target.

Each step of the proxy run takes the gradient of every domain sub-batch of a uniform batch and
scores domain j by s_j = lr_t * <g_j, g_target>, where g_target is the gradient on the target:
a mixed validation batch by default, or the validation windows of named domains. With
`target: train` (the published code's setting when every domain is a target) there is no target
batch, and s_j = lr_t * sum over i != j of <g_j, g_i> on the training batch itself. Then
p = softmax(log p + s / mu), and the model steps with sum_j p_j g_j. The final model is retrained
on the average of p over the proxy run. Its implicit transfer matrix is the Gram matrix of the
domain gradients, which is symmetric. The harness takes all of these gradients from one forward
and backward pass over the batch and the target rows together.
"""

import numpy as np

from mixbench.backend import DOMAIN_GRADIENTS, TRAIN_TARGET, StepStats, check_gradient_target
from mixbench.errors import ConfigError
from mixbench.method import MethodContext, Observation, OnlineMethod, register
from mixbench.simplex import uniform
from methods.doremi import run_length
from methods.updates import doge_scores, doge_update, train_alignment

# Published DoGE step sizes 1/mu: mu 0.01, and 0.1 from 7 domains on (SlimPajama's 7 domains).
SMALL_MU, LARGE_MU, LARGE_FROM_DOMAINS = 0.01, 0.1, 7


@register
class DoGE(OnlineMethod):
    """DoGE's proxy run with the gradient-alignment update after every step, then a retrain on the average p.

    - `mu`: the update is softmax(log p + s / mu); null uses the published 0.01, or 0.1 with 7 or
      more domains.
    - `lr`: the proxy's peak learning rate; lr_t is `lr` times the backend's learning-rate
      multiplier of the step. 5e-4 is the published proxy's learning rate; set it to train.lr.
    - `normalize_and_clip`: divide the scores by the mean gradient norm and clip them to
      [0, 5 lr_t], as the published code does (so negatively aligned domains score 0).
    - `target`: the gradient that domains are aligned with. Null: a validation batch drawn
      equally from every domain. A list of domain names: a validation batch drawn from those
      domains only. "train": the other domains' training gradients, with no extra pass.
    """

    name = "doge"
    trains_proxy = True
    by_loss_weights = True
    requires = frozenset({DOMAIN_GRADIENTS})

    def __init__(self, mu: float | None = None, lr: float = 5e-4, normalize_and_clip: bool = True, target=None):
        self.mu = mu
        self.lr = lr
        self.normalize_and_clip = normalize_and_clip
        self.target = target

    def run_params(self, context: MethodContext) -> dict:
        # "wiki" and ["wiki"], or one list in two orders, name one target and so one run. So do
        # mu=null and the published value it stands for at this number of domains.
        target = check_gradient_target(self.gradient_target, context.domains)
        if isinstance(target, tuple):
            target = [name for name in context.domains if name in target]
        return self.get_params() | {"target": target, "mu": self.resolved_mu(context.m)}

    @property
    def gradient_target(self):
        """The backend's alignment target: None, TRAIN_TARGET or a tuple of domain names."""
        if self.target is None or isinstance(self.target, str):
            return self.target
        return tuple(self.target)

    @property
    def round_steps(self) -> int:
        # The step hook moves the mixture; the only round is at step 0.
        return run_length(self)

    def check(self, context: MethodContext) -> None:
        if self.mu is not None and not self.mu > 0:
            raise ConfigError(f"doge mu={self.mu!r} is invalid; it must be positive (or null for the published default).")
        if not self.lr > 0:
            raise ConfigError(f"doge lr={self.lr!r} is invalid; give the proxy's positive peak learning rate.")
        try:
            check_gradient_target(self.gradient_target, context.domains)
        except ConfigError as error:
            raise ConfigError(f"doge target={self.target!r}: {error}") from None

    def resolved_mu(self, m: int) -> float:
        """Return mu, or the published default for m domains when `mu` is null."""
        if self.mu is not None:
            return float(self.mu)
        return LARGE_MU if m >= LARGE_FROM_DOMAINS else SMALL_MU

    def use_prerequisites(self, observations: list[Observation], context: MethodContext) -> None:
        self.check(context)
        self.total_steps_ = context.total_steps
        self.mixture_ = uniform(context.m)
        self.A_ = None

    def optimize(self, context: MethodContext) -> np.ndarray:
        return self.mixture_

    def step_hook(self, context: MethodContext) -> "DoGE":
        # The method is its own step hook, so the hook's state is checkpointed with the method.
        return self

    def update(self, stats: StepStats, mixture: np.ndarray) -> np.ndarray | None:
        """Take one DoGE step from the step's gradient alignments; see `StepHook.update`."""
        if stats.gradient_gram is None:
            raise ConfigError("doge's step hook received no gradient statistics; the backend must provide DOMAIN_GRADIENTS.")
        if self.gradient_target == TRAIN_TARGET:
            alignment = train_alignment(stats.gradient_gram)
        elif stats.target_alignment is None:
            raise ConfigError("doge's step hook received no target alignments; the backend must provide DOMAIN_GRADIENTS.")
        else:
            alignment = stats.target_alignment
        lr_t = self.lr * stats.lr_scale
        scores = doge_scores(alignment, stats.gradient_gram, lr_t, self.normalize_and_clip)
        self.A_ = None if stats.gradient_gram is None else np.asarray(stats.gradient_gram, dtype=np.float64)
        self.mixture_ = doge_update(mixture, scores, self.resolved_mu(len(mixture)))
        return self.mixture_
