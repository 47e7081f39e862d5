"""SimBackend: the TrainingBackend protocol on a simulated world.

A simulated step takes about 50 microseconds with 8 domains, or 90 when a hook requests
domain gradients (measured on one AMD EPYC core with numpy 2.4).
Each optimizer step advances the world's true losses exactly as `SimWorld.advance` describes,
with the step's time eta = step_size * lr_scale(step). Without noise, a run on a fixed mixture
in the default largest-remainder sampling mode ends at
`world.static_loss(mixture, total_steps, schedule=backend.schedule)`.
"""

import copy
from dataclasses import dataclass

import numpy as np

from mixbench.backend import DOMAIN_GRADIENTS, KNOWN_REQUIREMENTS, REFERENCE_LOSS, TRAIN_TARGET, check_gradient_target
from mixbench.backend import Compute, StepHook, StepStats, TrainResult
from mixbench.errors import ConfigError
from mixbench.sim.schedule import LRSchedule
from mixbench.sim.world import SimWorld
from mixbench.simplex import uniform, validate_mixture

PURPOSES = ("train", "exploration")
SAMPLING_MODES = ("largest_remainder", "multinomial")
REFERENCE_MODES = ("final", "lockstep")
SPLITS = ("val", "test")


@dataclass
class SimSnapshot:
    """Opaque copy of a SimBackend's full state, returned by `snapshot`."""

    state: dict


def largest_remainder(mixture: np.ndarray, total: int) -> np.ndarray:
    """Split `total` tokens by `mixture` into integers, giving leftover tokens to the largest remainders.

    Ties go to the lower domain index, as in `mixbench.train.sampler.domain_counts`. The simulator
    keeps its own copy so that it does not import the training package.
    """
    raw = mixture * total
    counts = np.floor(raw).astype(np.int64)
    leftover = total - int(counts.sum())
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[:leftover]] += 1
    return counts


class SimBackend:
    """A TrainingBackend whose model is a `SimWorld` with known ground truth.

    - `sampling="largest_remainder"`: the batch splits `tokens_per_step` by largest remainder,
      and the update uses the mixture itself (the expected batch), so runs follow the law exactly.
      `sampling="multinomial"`: token counts are drawn from a seeded multinomial and the update
      uses the drawn composition.
    - `warmup_steps`, `lr_schedule` and `min_lr_ratio` set the learning-rate schedule
      (`LRSchedule`), which defaults to the harness's warmup plus cosine decay.
    - `eval_noise` and `train_noise`: standard deviations of Gaussian noise added to each
      reported evaluation loss and per-step training loss. The true losses stay noise-free.
      The noise is drawn from `seed` and `noise_key` (the run's id in a benchmark), so runs of
      one seed on other mixtures get other noise. Without a key, the noise follows `seed` alone.
    - The reference model (for hooks that request REFERENCE_LOSS) is trained on
      `reference_mixture`. With `reference_mode="final"` it is the finished reference run of
      `total_steps` steps, which is how DoReMi uses its reference. With "lockstep" it trains
      alongside this model and has always taken as many steps as this one.
    """

    def __init__(
        self,
        world: SimWorld,
        total_steps: int,
        tokens_per_step: int = 4096,
        *,
        eval_noise: float = 0.0,
        train_noise: float = 0.0,
        seed: int = 0,
        noise_key: int | None = None,
        warmup_steps: int | None = None,
        lr_schedule: str = "cosine",
        min_lr_ratio: float = 0.1,
        sampling: str = "largest_remainder",
        reference_mixture: np.ndarray | None = None,
        reference_mode: str = "final",
        eval_tokens_per_set: int = 4096,
    ):
        self.schedule = LRSchedule(lr_schedule, warmup_steps, min_lr_ratio)
        self._lr_scales = self.schedule.scales(total_steps)
        self._check_settings(tokens_per_step, eval_noise, train_noise, sampling, eval_tokens_per_set)
        self.world = world
        self.domains = tuple(world.names)
        self.eval_sets = tuple(world.names)
        self.total_steps = int(total_steps)
        self.tokens_per_step = int(tokens_per_step)
        self.eval_noise = float(eval_noise)
        self.train_noise = float(train_noise)
        self.sampling = sampling
        self.eval_tokens_per_set = int(eval_tokens_per_set)
        self.step = 0
        self.compute = Compute()
        self.seed = int(seed)
        sampling_seed, train_seed, eval_seed = np.random.SeedSequence(seed).spawn(3)
        if noise_key is not None:
            # Runs of one seed share their batches but not their noise: with one noise draw for all,
            # a law fitted to many runs would absorb it in its intercept and look noise-free.
            train_seed, eval_seed = np.random.SeedSequence([int(seed), int(noise_key)]).spawn(2)
        self._rngs = {
            "sampling": np.random.default_rng(sampling_seed),
            "train_noise": np.random.default_rng(train_seed),
            "eval_noise": np.random.default_rng(eval_seed),
        }
        self._losses = world.initial_loss.copy()
        self._mixtures: list[np.ndarray] = []
        self._rounds: list[dict] = []
        self._reference: dict | None = None
        if reference_mixture is not None:
            self.set_reference(reference_mixture, mode=reference_mode)

    @staticmethod
    def _check_settings(tokens_per_step, eval_noise, train_noise, sampling, eval_tokens_per_set) -> None:
        if not isinstance(tokens_per_step, (int, np.integer)) or tokens_per_step < 1:
            raise ConfigError(f"tokens_per_step must be a positive integer, got {tokens_per_step!r}.")
        if not isinstance(eval_tokens_per_set, (int, np.integer)) or eval_tokens_per_set < 0:
            raise ConfigError(f"eval_tokens_per_set must be a non-negative integer, got {eval_tokens_per_set!r}.")
        if not (eval_noise >= 0 and train_noise >= 0):
            raise ConfigError(f"noise levels must be >= 0, got eval_noise={eval_noise!r}, train_noise={train_noise!r}.")
        if sampling not in SAMPLING_MODES:
            raise ConfigError(f"unknown sampling {sampling!r}; use one of {', '.join(SAMPLING_MODES)}.")

    # ----- reference model -------------------------------------------------------------------

    def set_reference(self, mixture: np.ndarray, *, mode: str = "final") -> None:
        """Set the reference model whose losses give the excess loss (see the class docstring for `mode`)."""
        if mode not in REFERENCE_MODES:
            raise ConfigError(f"unknown reference mode {mode!r}; use one of {', '.join(REFERENCE_MODES)}.")
        p = validate_mixture(mixture, self.domains, name="reference mixture")
        steps = self.total_steps if mode == "final" else self.step
        losses = self.world.integrate(p, self.world.step_size * self._lr_scales[:steps])
        self._reference = {"mixture": p, "mode": mode, "losses": losses}

    # ----- training --------------------------------------------------------------------------

    def train(
        self,
        steps: int,
        mixture: np.ndarray,
        *,
        by_loss_weights: bool = False,
        hook: StepHook | None = None,
        purpose: str = "train",
    ) -> TrainResult:
        """Train `steps` steps on `mixture`, calling `hook.update` once per step when a hook is given.

        In loss-weight mode the batch is uniform and the update weights the domains by the
        mixture, which the hook's returned mixture replaces within the same step. In sampling
        mode the hook's mixture applies from the next batch on. `TrainResult.mixtures` contains
        the mixture in force after each step's hook, as the harness records it: that step's loss
        weights, or in sampling mode the mixture of the next batch. `train_loss` is each domain's
        token-weighted mean training loss over the call, NaN for a domain that got no tokens.
        """
        steps = self._check_steps(steps)
        p = validate_mixture(mixture, self.domains)
        if purpose not in PURPOSES:
            raise ConfigError(f"unknown purpose {purpose!r}; use one of {', '.join(PURPOSES)}.")
        requires = self._check_hook(hook)
        target = check_gradient_target(getattr(hook, "gradient_target", None), self.domains)
        if steps > 0:
            self._rounds.append({"step": self.step, "purpose": purpose, "A": self.world.true_A(self._losses)})

        m = len(self.domains)
        tokens = np.zeros(m, dtype=np.int64)
        loss_sums = np.zeros(m)
        mixtures = []
        for _ in range(steps):
            p, step_tokens, step_loss = self._train_step(p, by_loss_weights, hook, requires, purpose, target)
            tokens += step_tokens
            loss_sums += np.where(step_tokens > 0, step_loss, 0.0) * step_tokens
            mixtures.append(p.copy())
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_loss = np.where(tokens > 0, loss_sums / tokens, np.nan)
        return TrainResult(steps=steps, tokens=tokens, train_loss=mean_loss, mixtures=mixtures)

    def _train_step(self, p, by_loss_weights, hook, requires, purpose, target):
        """Run one step; return the mixture in force after the hook, the tokens and the train losses."""
        lr = float(self._lr_scales[self.step])
        m = len(self.domains)
        tokens = self._draw_tokens(uniform(m) if by_loss_weights else p)
        train_loss = self._train_losses(tokens)
        stats = StepStats(step=self.step, lr_scale=lr, tokens=tokens.copy(), train_loss=train_loss.copy())
        if REFERENCE_LOSS in requires:
            # NOTE: without per-token losses the per-domain difference is clipped at 0. A real
            # harness averages per-token clipped values, which can only be larger.
            stats.excess_loss = np.maximum(train_loss - self._reference["losses"], 0.0)
            self.compute.reference_tokens += self.tokens_per_step
        if DOMAIN_GRADIENTS in requires:
            gradients = self.world.domain_gradients(self._losses)
            stats.gradient_gram = gradients @ gradients.T
            # The simulator has no validation batch, so the target gradient is the mean gradient of
            # the target domains (every domain by default).
            if target != TRAIN_TARGET:
                columns = [self.domains.index(name) for name in target] if target else list(range(m))
                stats.target_alignment = stats.gradient_gram[:, columns].mean(axis=1)

        next_p = p
        if hook is not None:
            returned = hook.update(stats, p.copy())
            if returned is not None:
                next_p = validate_mixture(returned, self.domains, name="mixture returned by the step hook")

        if by_loss_weights:
            weights = next_p
        elif self.sampling == "multinomial":
            weights = tokens / self.tokens_per_step
        else:
            weights = p
        self._advance(weights, lr)
        if purpose == "train":
            self.compute.train_tokens += self.tokens_per_step
        else:
            self.compute.exploration_tokens += self.tokens_per_step
        self._mixtures.append(next_p.copy())
        return next_p, tokens, train_loss

    def _advance(self, weights: np.ndarray, lr: float) -> None:
        eta = self.world.step_size * lr
        self._losses = self.world.advance(self._losses, weights, eta)
        reference = self._reference
        if reference is not None and reference["mode"] == "lockstep":
            reference["losses"] = self.world.advance(reference["losses"], reference["mixture"], eta)
        self.step += 1

    def _draw_tokens(self, mixture: np.ndarray) -> np.ndarray:
        if self.sampling == "multinomial":
            return self._rngs["sampling"].multinomial(self.tokens_per_step, mixture).astype(np.int64)
        return largest_remainder(mixture, self.tokens_per_step)

    def _train_losses(self, tokens: np.ndarray) -> np.ndarray:
        losses = self._losses.copy()
        if self.train_noise > 0:
            losses += self.train_noise * self._rngs["train_noise"].standard_normal(losses.shape)
        losses[tokens == 0] = np.nan
        return losses

    def _check_steps(self, steps) -> int:
        if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 0:
            raise ConfigError(f"steps must be a non-negative integer, got {steps!r}.")
        if self.step + steps > self.total_steps:
            raise ConfigError(
                f"training {steps} steps from step {self.step} would pass total_steps={self.total_steps}; "
                f"at most {self.total_steps - self.step} steps are left."
            )
        return int(steps)

    def _check_hook(self, hook) -> frozenset:
        if hook is None:
            return frozenset()
        requires = frozenset(getattr(hook, "requires", frozenset()))
        unknown = requires - KNOWN_REQUIREMENTS
        if unknown:
            raise ConfigError(
                f"the step hook requires unknown statistics {sorted(unknown)}; known: {sorted(KNOWN_REQUIREMENTS)}."
            )
        if REFERENCE_LOSS in requires and self._reference is None:
            raise ConfigError(
                "the step hook requires reference losses but the simulator has no reference model; "
                "pass reference_mixture=... to SimBackend or call set_reference(mixture)."
            )
        return requires

    # ----- evaluation, state and ground truth ------------------------------------------------

    def evaluate(self, split: str = "val") -> np.ndarray:
        """Return each evaluation set's current loss plus Gaussian noise of std `eval_noise`.

        "val" and "test" share the true losses and differ only in their noise draws.
        """
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}.")
        losses = self._losses.copy()
        if self.eval_noise > 0:
            losses += self.eval_noise * self._rngs["eval_noise"].standard_normal(losses.shape)
        self.compute.eval_tokens += self.eval_tokens_per_set * len(self.eval_sets)
        return losses

    @property
    def true_losses(self) -> np.ndarray:
        """Current noise-free losses of the evaluation sets."""
        return self._losses.copy()

    @property
    def trajectory(self) -> np.ndarray:
        """Mixture of every step taken so far, shape (step, m)."""
        return np.array(self._mixtures).reshape(len(self._mixtures), len(self.domains))

    _STATE_FIELDS = ("step", "compute", "_rngs", "_losses", "_mixtures", "_rounds", "_reference")

    def snapshot(self) -> SimSnapshot:
        """Return a deep copy of the state: losses, step, random generators, compute, history, reference."""
        return SimSnapshot(state=copy.deepcopy({name: getattr(self, name) for name in self._STATE_FIELDS}))

    def restore(self, snapshot: SimSnapshot) -> None:
        """Return to the state of `snapshot`; the snapshot stays valid for further restores."""
        if not isinstance(snapshot, SimSnapshot) or np.shape(snapshot.state.get("_losses")) != self._losses.shape:
            raise ConfigError(f"cannot restore {type(snapshot).__name__}: it is not a snapshot of this SimBackend.")
        for name, value in copy.deepcopy(snapshot.state).items():
            setattr(self, name, value)

    def reseed_noise(self, key: int) -> None:
        """Draw the training and evaluation noise from here on from `seed` and `key`.

        Branch children restore one parent state; each reseeds with its own key, so that their
        evaluations carry independent noise instead of one shared draw.
        """
        train_seed, eval_seed = np.random.SeedSequence([self.seed, int(key)]).spawn(2)
        self._rngs["train_noise"] = np.random.default_rng(train_seed)
        self._rngs["eval_noise"] = np.random.default_rng(eval_seed)

    def ground_truth(self) -> dict:
        """Return the true law behind this run.

        - "A", "round_steps", "round_purposes": the true A^t at the start of each `train` call
          of the current state's history (a restore rolls them back), its step and purpose;
        - "mixtures": the mixture of every step, as `trajectory`;
        - "losses": the current noise-free losses;
        - "optimal_static_mixture", "optimal_static_loss": the best fixed mixture for a run of
          `total_steps` with this schedule, and its mean loss, under the true (gated, if the
          world has prerequisites) dynamics;
        - "closed_form_optimal_mixture", "closed_form_optimal_loss": the same for the ungated
          closed-form static law.
        """
        settings = dict(schedule=self.schedule)
        world = self.world
        return {
            "A": [entry["A"].copy() for entry in self._rounds],
            "round_steps": [entry["step"] for entry in self._rounds],
            "round_purposes": [entry["purpose"] for entry in self._rounds],
            "mixtures": self.trajectory,
            "losses": self.true_losses,
            "optimal_static_mixture": world.optimal_static_mixture(self.total_steps, **settings),
            "optimal_static_loss": world.optimal_static_loss(self.total_steps, **settings),
            "closed_form_optimal_mixture": world.optimal_static_mixture(self.total_steps, gated=False, **settings),
            "closed_form_optimal_loss": world.optimal_static_loss(self.total_steps, gated=False, **settings),
        }
