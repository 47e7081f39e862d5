"""DoReMi (Xie et al. 2023): group DRO on a proxy model against a reference model.

A reference model is trained on a reference mixture (uniform by default, which is the
stratified run itself, shared through the run store). A proxy model of the same size then
trains on uniform batches with each domain's loss weighted by p, and after every step
p = softmax(log p + eta * lambda) followed by p = (1 - eps) p + eps / m, where lambda_j is the
domain's mean per-token excess loss max(l_proxy - l_ref, 0). The final model is retrained on
the average of p over the proxy run. Its implicit transfer matrix is diag(lambda).
"""

import numpy as np

from mixbench.backend import REFERENCE_LOSS, StepStats
from mixbench.errors import ConfigError
from mixbench.method import MethodContext, Observation, OnlineMethod, Probe, register
from mixbench.simplex import mixture_from_setting, uniform
from methods.updates import doremi_update, fill_absent

NORMALIZATIONS = ("token_mean", "domain_mean")


@register
class DoReMi(OnlineMethod):
    """DoReMi's proxy run with the excess-loss update after every step, then a retrain on the average p.

    - `eta`: step size of the log-space update (1 in the published code and scripts).
    - `smoothing`: eps of p = (1 - eps) p + eps / m (1e-3 in the published training scripts).
    - `reference_mixture`: the reference run's mixture, a list with one weight per domain or a
      mapping {domain: weight} (domains left out get 0). Null trains the reference on the uniform
      mixture, which is the stratified run.
    - `normalization`: how the proxy's weighted loss is normalised. "token_mean" (the published
      code) divides the sum of per-token losses, each weighted by p_j / (1/m), by the batch's
      token count. "domain_mean" (the paper) sums p_j times domain j's mean token loss. The two
      agree when every domain gets the same number of tokens. The run's spec records the choice.

    A domain absent from a step's batch keeps its previous lambda. Before its first appearance it
    gets the mean lambda of the domains present, which leaves its weight unchanged relative to
    the others. (The published code starts every lambda at the log of the vocabulary size, which
    the method does not know and which would multiply an unseen domain's weight by V^eta.)
    """

    name = "doremi"
    trains_proxy = True
    by_loss_weights = True
    requires = frozenset({REFERENCE_LOSS})

    def __init__(self, eta: float = 1.0, smoothing: float = 1e-3, reference_mixture=None, normalization: str = "token_mean"):
        self.eta = eta
        self.smoothing = smoothing
        self.reference_mixture = reference_mixture
        self.normalization = normalization

    @property
    def loss_normalization(self) -> str:
        """The loss normalisation the backend applies while this method trains by loss weights."""
        return self.normalization

    @property
    def round_steps(self) -> int:
        # The step hook moves the mixture; the only round is at step 0.
        return run_length(self)

    def check(self, context: MethodContext) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(f"doremi normalization={self.normalization!r} is unknown; use one of {', '.join(NORMALIZATIONS)}.")
        if not (self.eta > 0 and 0 <= self.smoothing <= 1):
            raise ConfigError(f"doremi needs eta > 0 and smoothing in [0, 1], got eta={self.eta!r}, smoothing={self.smoothing!r}.")
        self._reference(context)

    def _reference(self, context: MethodContext) -> np.ndarray:
        if self.reference_mixture is None:
            return uniform(context.m)
        return mixture_from_setting(self.reference_mixture, context.domains, name="doremi reference_mixture")

    def prerequisites(self, context: MethodContext) -> list[Probe]:
        return [Probe(mixture=self._reference(context), role="reference")]

    def use_prerequisites(self, observations: list[Observation], context: MethodContext) -> None:
        self.check(context)
        self.total_steps_ = context.total_steps
        self.mixture_ = uniform(context.m)
        self.excess_loss_ = None
        self.A_ = None

    def optimize(self, context: MethodContext) -> np.ndarray:
        return self.mixture_

    def step_hook(self, context: MethodContext) -> "DoReMi":
        # The method is its own step hook, so the hook's state is checkpointed with the method.
        return self

    def update(self, stats: StepStats, mixture: np.ndarray) -> np.ndarray | None:
        """Take one DoReMi step from the step's excess losses; see `StepHook.update`."""
        if stats.excess_loss is None:
            raise ConfigError("doremi's step hook received no excess losses; the backend must provide REFERENCE_LOSS.")
        excess = fill_absent(stats.excess_loss, self.excess_loss_)
        if np.isnan(excess).all():
            return None
        self.excess_loss_ = excess
        self.A_ = np.diag(excess)
        self.mixture_ = doremi_update(mixture, excess, self.eta, self.smoothing)
        return self.mixture_


def run_length(method: OnlineMethod) -> int:
    """Return the run length a per-step method stored in `use_prerequisites`: its only round."""
    steps = getattr(method, "total_steps_", None)
    if steps is None:
        raise ConfigError(
            f"{method.name} does not know the run length yet; call use_prerequisites(observations, context) "
            f"before training (run_method does this)."
        )
    return int(steps)
