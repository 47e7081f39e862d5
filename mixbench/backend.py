"""The protocol through which mixing methods drive training.

A method never owns a training loop. It asks a backend to train some steps on a mixture and
to evaluate per-domain losses. The Accelerate harness (`mixbench.train`) and the simulator
(`mixbench.sim`) both implement this protocol, so every method runs unchanged on either.
"""

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from mixbench.errors import ConfigError, unknown_name_error

# Statistics a step hook may request; the backend computes only what is requested.
REFERENCE_LOSS = "reference_loss"
DOMAIN_GRADIENTS = "domain_gradients"
KNOWN_REQUIREMENTS = frozenset({REFERENCE_LOSS, DOMAIN_GRADIENTS})

# With DOMAIN_GRADIENTS, a hook's optional `gradient_target` attribute names the target that the
# domain gradients are aligned with. None: validation windows of every domain, in equal shares. A
# tuple of domain names: validation windows of those domains. TRAIN_TARGET: no target batch, so
# `target_alignment` stays None and the hook uses the Gram matrix of the training gradients.
TRAIN_TARGET = "train"


def check_gradient_target(target, domains: tuple[str, ...]):
    """Return a hook's gradient target (None, TRAIN_TARGET or a tuple of names), checked against `domains`."""
    if target is None or target == TRAIN_TARGET:
        return target
    if isinstance(target, str):
        target = (target,)
    target = tuple(target)
    if not target:
        raise ConfigError("the gradient target is an empty list of domains; name at least one domain, or use null for all.")
    for name in target:
        if name not in domains:
            raise unknown_name_error("target domain", name, domains, "Name target domains among the setting's domains, or use train (the training batch) or null (every domain's validation data).")
    return target


@dataclass
class StepStats:
    """Per-domain statistics of one training step, as a step hook sees them.

    Losses are mean per-token natural-log losses. A domain absent from the step's batch has
    NaN losses and zero tokens.
    """

    step: int
    lr_scale: float
    tokens: np.ndarray
    train_loss: np.ndarray
    excess_loss: np.ndarray | None = None
    gradient_gram: np.ndarray | None = None
    target_alignment: np.ndarray | None = None


@runtime_checkable
class StepHook(Protocol):
    """An online update called by the backend once per training step.

    The backend calls `update` after the step's per-domain statistics exist (after the forward
    pass, and after the per-domain backward passes when `DOMAIN_GRADIENTS` is requested) and
    before the weighted backward pass and optimizer step. The returned mixture applies from that
    point: as loss weights in the current step when training by loss weights, and as the sampling
    mixture from the next batch on. Returning None keeps the mixture unchanged.
    """

    # Optional: a hook without `requires` requests no statistics.
    requires: frozenset[str]
    # Optional: `gradient_target` (see TRAIN_TARGET above); a hook without it gets None.

    def update(self, stats: StepStats, mixture: np.ndarray) -> np.ndarray | None: ...


@dataclass
class TrainResult:
    """The outcome of one `TrainingBackend.train` call."""

    steps: int
    tokens: np.ndarray
    train_loss: np.ndarray
    mixtures: list[np.ndarray] = field(default_factory=list)


@dataclass
class Compute:
    """Compute spent by a backend, split by purpose. Tokens are counted per forward pass.

    `reference_tokens` are the training tokens a reference model scored (DoReMi's excess loss),
    `target_tokens` those of the extra batches whose gradient is a target (DoGE's validation
    batch). Both passes run inside training steps, so their time is part of `train_time_s`.
    `flops` covers every pass. `wall_time_s` is the sum of the training, exploration and
    evaluation times.
    """

    train_tokens: int = 0
    exploration_tokens: int = 0
    eval_tokens: int = 0
    reference_tokens: int = 0
    target_tokens: int = 0
    flops: float = 0.0
    wall_time_s: float = 0.0
    train_time_s: float = 0.0
    exploration_time_s: float = 0.0
    eval_time_s: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@runtime_checkable
class TrainingBackend(Protocol):
    """Train a model on mixtures of domains and report per-domain losses.

    `domains` are the training domains (length m) and `eval_sets` the evaluation sets (length n,
    usually the same names). `step` counts training steps taken so far, exploration included,
    out of `total_steps`.
    """

    domains: tuple[str, ...]
    eval_sets: tuple[str, ...]
    total_steps: int
    step: int
    compute: Compute

    def train(
        self,
        steps: int,
        mixture: np.ndarray,
        *,
        by_loss_weights: bool = False,
        hook: StepHook | None = None,
        purpose: str = "train",
    ) -> TrainResult:
        """Train `steps` optimizer steps on `mixture`, either by sampling batches from it or,
        with `by_loss_weights=True`, by sampling uniformly and weighting each domain's loss.
        `purpose` ("train" or "exploration") only changes how the compute is counted."""
        ...

    def evaluate(self, split: str = "val") -> np.ndarray:
        """Return the mean per-token loss of each evaluation set on `split` ("val" or "test")."""
        ...

    def snapshot(self) -> object:
        """Return an opaque copy of the full training state, to branch from with `restore`."""
        ...

    def restore(self, snapshot: object) -> None:
        """Return to a state captured by `snapshot`."""
        ...
