"""Skill-It (Chen et al. 2023): a skills graph steers the mixture towards domains that help lagging ones.

The skills graph G[i, j] measures how much training on domain i lowers the loss of evaluation set
j. Unless it is given in the config, it is learned from m single-domain runs (prerequisite
runs with role "single_domain", shared through the run store) as the relative validation loss
drop on j after training only on i. Every `update_steps` steps the mixture is recomputed as
p_i proportional to exp(eta * sum_j G[i, j] * S_j), with S_j the sum of set j's validation
losses over the last `window` evaluations. Its implicit transfer matrix is A_ij = G[j, i] * L_i,
with L_i the mean validation loss of set i over the window.
"""

import numpy as np

from mixbench.errors import ConfigError
from mixbench.method import MethodContext, Observation, OnlineMethod, Probe, register
from mixbench.simplex import uniform
from methods.updates import relative_loss_drop, skill_it_mixture

# Update intervals of the Aioli paper's Skill-It runs: 500 steps, or 400 from 7 domains on.
UPDATE_STEPS, UPDATE_STEPS_MANY, MANY_DOMAINS = 500, 400, 7


@register
class SkillIt(OnlineMethod):
    """Skill-It's online sampling: recompute p from the skills graph and recent validation losses.

    - `eta`: step size (0.2 in the Aioli paper's SlimPajama runs).
    - `update_steps`: steps between updates; null uses 500, or 400 with 7 or more domains.
    - `window`: number of most recent validation evaluations summed into S (3 in the published code).
    - `graph`: an m x m skills graph (rows: training domains, columns: evaluation sets); null
      learns it from single-domain runs.
    - `graph_steps_fraction`: length of each single-domain run as a fraction of the main run
      (1.0: the Aioli paper's graph-learning runs are as long as the main run).
    """

    name = "skill_it"

    def __init__(self, eta: float = 0.2, update_steps: int | None = None, window: int = 3, graph=None, graph_steps_fraction: float = 1.0):
        self.eta = eta
        self.update_steps = update_steps
        self.window = window
        self.graph = graph
        self.graph_steps_fraction = graph_steps_fraction

    @property
    def round_steps(self) -> int:
        steps = self.update_steps if self.update_steps is not None else getattr(self, "update_steps_", None)
        if steps is None:
            raise ConfigError("skill_it does not know its update interval yet; call use_prerequisites(observations, context) first.")
        return int(steps)

    def check(self, context: MethodContext) -> None:
        if self.graph is not None:
            try:
                shape = np.shape(self.graph)
            except ValueError:
                raise ConfigError(
                    f"skill_it graph {self.graph!r} has rows of different lengths; give {context.m} rows of "
                    f"{len(context.eval_sets)} numbers, one row per domain ({', '.join(context.domains)})."
                ) from None
            if shape != (context.m, len(context.eval_sets)):
                raise ConfigError(
                    f"skill_it graph has shape {shape} but this setting has {context.m} training domains and "
                    f"{len(context.eval_sets)} evaluation sets; give one row per domain ({', '.join(context.domains)}) "
                    f"with one column per evaluation set."
                )
            values = np.asarray(self.graph, dtype=object).ravel()
            bad = [value for value in values if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value)]
            if bad:
                raise ConfigError(
                    f"skill_it graph contains {bad[0]!r}; every entry must be a finite number (negative entries, where "
                    f"training on a domain raises another's loss, are allowed)."
                )
        if not (self.eta > 0 and self.window >= 1 and 0 < self.graph_steps_fraction <= 1):
            raise ConfigError(
                f"skill_it needs eta > 0, window >= 1 and graph_steps_fraction in (0, 1]; got eta={self.eta!r}, "
                f"window={self.window!r}, graph_steps_fraction={self.graph_steps_fraction!r}."
            )
        if self.update_steps is not None and not (isinstance(self.update_steps, int) and self.update_steps >= 1):
            raise ConfigError(f"skill_it update_steps={self.update_steps!r} is invalid; use a positive whole number or null.")
        update_steps = self.interval(context.m)
        setting_text = (f"update_steps={self.update_steps}" if self.update_steps is not None
                 else f"update_steps=null: the published interval for {context.m} domains")
        if update_steps >= context.total_steps:
            raise ConfigError(
                f"skill_it updates every {update_steps} steps ({setting_text}), which is not below {context.steps_setting}="
                f"{context.total_steps}, so it would choose one mixture at step 0 and never update it. Set "
                f"method.update_steps below {context.steps_setting} (the default experiment uses 50 for 300 steps)."
            )

    def interval(self, m: int) -> int:
        """Return the update interval: `update_steps`, or the published default for m domains when it is null."""
        if self.update_steps is not None:
            return int(self.update_steps)
        return UPDATE_STEPS_MANY if m >= MANY_DOMAINS else UPDATE_STEPS

    def run_params(self, context: MethodContext) -> dict:
        return self.get_params() | {"update_steps": self.interval(context.m)}

    def prerequisites(self, context: MethodContext) -> list[Probe]:
        if self.graph is not None:
            return []
        steps = max(1, round(self.graph_steps_fraction * context.total_steps))
        return [Probe(mixture=np.eye(context.m)[j], steps=steps, role="single_domain") for j in range(context.m)]

    def use_prerequisites(self, observations: list[Observation], context: MethodContext) -> None:
        self.check(context)
        if self.update_steps is None:
            self.update_steps_ = self.interval(context.m)
        single = [observation.losses for observation in observations if observation.role == "single_domain"]
        self.single_domain_losses_ = np.array(single) if single else None
        self.graph_ = None if self.graph is None else np.asarray(self.graph, dtype=np.float64)
        self.A_ = None

    def explore(self, context: MethodContext) -> list[Probe]:
        # A zero-step sub-round at the first round evaluates the untrained model: its losses are the
        # baseline of the learned graph and the first S.
        if getattr(self, "A_", None) is None:
            return [Probe(mixture=uniform(context.m), steps=0, role="exploration")]
        return []

    def fit(self, observations: list[Observation], context: MethodContext) -> "SkillIt":
        for observation in observations:
            if observation.role == "exploration":
                if self.graph_ is None:
                    self.graph_ = relative_loss_drop(observation.before, self.single_domain_losses_)
                self.baseline_losses_ = observation.losses
        # The untrained model's evaluation comes first, so a round that starts before the run's
        # first periodic validation still has losses to sum.
        evaluations = [self.baseline_losses_] + [o.losses for o in observations if o.role == "validation"]
        if self.graph_ is None:
            raise ConfigError("skill_it has neither a configured graph nor single-domain runs; run it through run_method.")
        recent = np.array(evaluations[-self.window :])
        self.loss_sums_ = recent.sum(axis=0)
        self.A_ = self.graph_.T * (self.loss_sums_ / len(recent))[:, None]
        return self

    def optimize(self, context: MethodContext) -> np.ndarray:
        return skill_it_mixture(self.graph_, self.loss_sums_, self.eta)
