"""The Accelerate training harness: a TrainingBackend over a real corpus and a real causal LM.

Default settings (conf/model/tiny.yaml, conf/train/cpu.yaml) are sized for a 2-core laptop CPU:
a GPT-2 of about 0.8M non-embedding parameters, byte vocabulary, context 128.
"""

import copy
import logging
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from mixbench.backend import DOMAIN_GRADIENTS, KNOWN_REQUIREMENTS, REFERENCE_LOSS, check_gradient_target
from mixbench.backend import Compute, StepHook, StepStats, TrainResult
from mixbench.errors import ConfigError, RunFailedError
from mixbench.simplex import validate_mixture
from mixbench.train import signals
from mixbench.train.accelerator import get_accelerator
from mixbench.train.group_gradients import GroupGradients
from mixbench.train.model import build_model, count_parameters, flops_per_token
from mixbench.train.sampler import MixtureSampler, evaluation_windows

log = logging.getLogger(__name__)

LOSS_NORMALIZATIONS = ("token_mean", "domain_mean")


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Learning-rate multiplier: linear warmup, then cosine decay to `min_ratio`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class HarnessBackend:
    """Train one model on mixtures of corpus domains; implements `TrainingBackend`."""

    def __init__(self, corpus, domains, model_settings: dict, train_settings: dict, seed: int):
        self.corpus = corpus
        self.domains = tuple(domains)
        self.eval_sets = self.domains
        self.settings = dict(train_settings)
        self.total_steps = int(train_settings["steps"])
        self.step = 0
        self.compute = Compute()
        self.accelerator = get_accelerator("bf16" if train_settings.get("bf16") else "no")
        self.context = int(model_settings["context"])
        self.batch_size = int(train_settings["batch_size"])
        self.accumulation = int(train_settings.get("grad_accumulation", 1))
        self.normalization = train_settings.get("loss_normalization", "token_mean")
        self._check_settings()

        # Every domain split must hold at least one window, or sampling and evaluation cannot work.
        corpus.check_min_tokens(self.context + 1)
        arrays = [corpus.tokens(domain, "train") for domain in self.domains]
        self.sampler = MixtureSampler(arrays, self.context, self.batch_size, seed, train_settings["sampling"])
        # Online methods that align gradients with a target draw one validation window per domain from here.
        target_rows = len(self.domains)
        validation = [corpus.tokens(domain, "val") for domain in self.domains]
        self.target_sampler = MixtureSampler(validation, self.context, target_rows, seed + 1, "largest_remainder")
        self.reference_model = None
        eval_tokens = int(train_settings["eval_tokens"])
        test_tokens = int(train_settings.get("test_tokens", eval_tokens))
        self.eval_windows = {
            split: [evaluation_windows(corpus.tokens(domain, split), self.context, budget) for domain in self.domains]
            for split, budget in (("val", eval_tokens), ("test", test_tokens))
        }

        model = build_model(model_settings, corpus.vocab_size, seed)
        self.parameters = count_parameters(model)
        self.flops_per_token = flops_per_token(model_settings, self.parameters["non_embedding"])
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=float(train_settings["lr"]),
            betas=(0.9, 0.95),
            weight_decay=float(train_settings["weight_decay"]),
        )
        warmup, min_ratio = int(train_settings["warmup_steps"]), float(train_settings["min_lr_ratio"])
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup, self.total_steps, min_ratio)
        )
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        # Domain gradients come from hooks on the unwrapped model, outside distributed gradient syncing.
        trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
        self.group_gradients = GroupGradients(self.accelerator.unwrap_model(self.model), trainable)
        self.last_losses = np.full(len(self.domains), np.nan)
        log.info(
            "built %s model: %.2fM non-embedding parameters, %d domains, batch %d x %d tokens",
            model_settings.get("family", "gpt2"),
            self.parameters["non_embedding"] / 1e6,
            len(self.domains),
            self.batch_size,
            self.context,
        )
        _warn_large_model_on_cpu(self.parameters["non_embedding"], self.accelerator.device)

    def _check_settings(self) -> None:
        if self.normalization not in LOSS_NORMALIZATIONS:
            raise ConfigError(
                f"train.loss_normalization={self.normalization!r} is unknown; use one of {', '.join(LOSS_NORMALIZATIONS)}."
            )
        processes = self.accelerator.num_processes
        if self.batch_size % (self.accumulation * processes):
            raise ConfigError(
                f"train.batch_size={self.batch_size} is not divisible by train.grad_accumulation={self.accumulation} "
                f"times {processes} process(es); choose a batch size that is a multiple of {self.accumulation * processes}."
            )

    # ------------------------------------------------------------------ training
    def train(
        self,
        steps: int,
        mixture: np.ndarray,
        *,
        by_loss_weights: bool = False,
        hook: StepHook | None = None,
        purpose: str = "train",
    ) -> TrainResult:
        """Take `steps` optimizer steps on `mixture`; see `TrainingBackend.train`."""
        mixture = validate_mixture(mixture, self.domains)
        requires = self._check_request(steps, purpose, hook)
        gradients_requested = DOMAIN_GRADIENTS in requires
        target_domains = check_gradient_target(getattr(hook, "gradient_target", None), self.domains)
        m = len(self.domains)
        total_tokens, total_loss, mixtures = np.zeros(m), np.zeros(m), []
        started = time.perf_counter()
        self.model.train()

        for _ in range(steps):
            # Draw the global batch (every process draws the same one) and keep this process's rows.
            # Training by loss weights or by domain gradients samples every domain equally.
            uniform_batch = by_loss_weights or gradients_requested
            tokens, domain_ids = self.sampler.sample(np.full(m, 1.0 / m) if uniform_batch else mixture)
            global_counts = np.bincount(domain_ids, minlength=m) * self.context
            rows = self._local_rows()
            tokens, domain_ids = tokens[rows], domain_ids[rows]

            # Forward every micro-batch, keeping per-domain loss sums; with a hook the graphs are
            # kept until the hook has seen this step's statistics.
            domain_gradients, excess, pending = None, None, []
            if gradients_requested:
                domain_gradients = signals.domain_gradients(self, tokens, domain_ids, global_counts, target_domains)
                sums, counts = domain_gradients.sums, domain_gradients.counts
            else:
                sums, counts, excess, pending = self._forward_micro_batches(
                    tokens, domain_ids, keep_graph=hook is not None, reference=REFERENCE_LOSS in requires
                )
            losses = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
            self._check_finite(losses, counts > 0, "training")

            # The hook sees this step's statistics and may change the mixture for this step's update.
            if hook is not None:
                stats = StepStats(self.step, self.lr_scale(), counts.copy(), losses.copy())
                if excess is not None:
                    stats.excess_loss = np.where(counts > 0, excess / np.maximum(counts, 1), np.nan)
                if domain_gradients is not None:
                    stats.gradient_gram = domain_gradients.gram
                    if domain_gradients.alignment is not None:
                        stats.target_alignment = domain_gradients.alignment
                        target_tokens = self.target_sampler.batch_size * self.context
                        self.compute.target_tokens += target_tokens
                        self.compute.flops += self.flops_per_token * target_tokens
                updated = hook.update(stats, mixture)
                if updated is not None:
                    mixture = validate_mixture(updated, self.domains, name="mixture returned by the step hook")
            if domain_gradients is not None:
                # Domain j's clipped gradient is scale_j * g_j, so scaling its weight clips it.
                signals.apply_combined_gradient(self, domain_gradients.gradients, mixture * domain_gradients.scale)
            elif pending:
                self._backward_pending(pending, counts, mixture if by_loss_weights else None)

            # Clip, step, and advance the schedule.
            self.accelerator.clip_grad_norm_(self.model.parameters(), float(self.settings["grad_clip"]))
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)

            if REFERENCE_LOSS in requires:
                self.compute.reference_tokens += int(global_counts.sum())
                self.compute.flops += self.reference_flops_per_token * float(global_counts.sum())
            total_tokens += counts
            total_loss += np.nan_to_num(sums)
            mixtures.append(mixture.copy())
            self.step += 1

        spent = int(total_tokens.sum())
        if purpose == "exploration":
            self.compute.exploration_tokens += spent
        else:
            self.compute.train_tokens += spent
        self.compute.flops += self.flops_per_token * spent
        elapsed = time.perf_counter() - started
        self.compute.wall_time_s += elapsed
        if purpose == "exploration":
            self.compute.exploration_time_s += elapsed
        else:
            self.compute.train_time_s += elapsed
        mean_loss = np.where(total_tokens > 0, total_loss / np.maximum(total_tokens, 1), np.nan)
        return TrainResult(steps=steps, tokens=total_tokens, train_loss=mean_loss, mixtures=mixtures)

    def _check_request(self, steps: int, purpose: str, hook: StepHook | None) -> frozenset:
        """Validate a `train` call before any step; return the statistics the hook requires."""
        if purpose not in ("train", "exploration"):
            raise ConfigError(f"unknown training purpose {purpose!r}; use 'train' or 'exploration'.")
        if steps < 0 or self.step + steps > self.total_steps:
            raise ConfigError(
                f"training {steps} steps from step {self.step} would pass the budget of {self.total_steps} steps; "
                f"exploration must fit inside the training budget."
            )
        # A hook without `requires` requests no statistics, as on the simulator.
        requires = frozenset(getattr(hook, "requires", frozenset()))
        unknown = requires - KNOWN_REQUIREMENTS
        if unknown:
            raise ConfigError(
                f"a step hook requires {', '.join(sorted(unknown))}, which the harness does not provide; "
                f"known: {', '.join(sorted(KNOWN_REQUIREMENTS))}."
            )
        if {REFERENCE_LOSS, DOMAIN_GRADIENTS} <= requires:
            raise ConfigError(
                f"a step hook requires both {REFERENCE_LOSS} and {DOMAIN_GRADIENTS}, which the harness does not "
                f"compute in the same step; request one of them."
            )
        if REFERENCE_LOSS in requires and self.reference_model is None:
            raise ConfigError("a step hook requires reference losses but no reference model is set; train a reference run first.")
        return requires

    def set_reference_model(self, model_settings: dict, path) -> None:
        """Load a finished run's weights as the frozen reference model."""
        self.reference_model = signals.load_reference_model(model_settings, self.corpus.vocab_size, path, self.accelerator.device)
        # A forward pass costs about 2 FLOPs per weight and token.
        self.reference_flops_per_token = 2.0 * count_parameters(self.reference_model)["non_embedding"]

    def set_loss_normalization(self, normalization: str) -> None:
        """Choose how per-domain loss weights are normalised (see LOSS_NORMALIZATIONS)."""
        self.normalization = normalization
        self._check_settings()

    def _local_rows(self) -> slice:
        processes, rank = self.accelerator.num_processes, self.accelerator.process_index
        per_process = self.batch_size // processes
        return slice(rank * per_process, (rank + 1) * per_process)

    def _token_losses(self, tokens: np.ndarray, model: torch.nn.Module | None = None) -> torch.Tensor:
        """Return the (rows, context) per-token cross-entropy of a batch of windows under `model`
        (by default the prepared training model)."""
        batch = torch.from_numpy(tokens).to(self.accelerator.device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with self.accelerator.autocast():
            logits = (self.model if model is None else model)(input_ids=inputs).logits
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none").view(
            targets.shape
        )

    def _domain_sums(self, token_losses: torch.Tensor, domain_ids: np.ndarray) -> torch.Tensor:
        index = torch.from_numpy(domain_ids).to(token_losses.device)
        sums = torch.zeros(len(self.domains), device=token_losses.device, dtype=token_losses.dtype)
        return sums.index_add(0, index, token_losses.sum(dim=1))

    def _forward_micro_batches(self, tokens, domain_ids, keep_graph: bool, reference: bool = False):
        """Run forward (and, unless graphs are kept, backward) over micro-batches; reduce per-domain stats.

        Returns per-domain loss sums, token counts, excess-loss sums over the reference model (or
        None), and the kept graphs.
        """
        m = len(self.domains)
        local_sums = torch.zeros(m, device=self.accelerator.device)
        local_counts = torch.zeros(m, device=self.accelerator.device)
        local_excess = torch.zeros(m, device=self.accelerator.device)
        pending = []
        rows_per_micro = len(tokens) // self.accumulation
        global_tokens = self.batch_size * self.context
        for micro in range(self.accumulation):
            rows = slice(micro * rows_per_micro, (micro + 1) * rows_per_micro)
            token_losses = self._token_losses(tokens[rows])
            domain_sums = self._domain_sums(token_losses, domain_ids[rows])
            local_sums += domain_sums.detach()
            local_counts += torch.bincount(torch.from_numpy(domain_ids[rows]), minlength=m).to(local_sums) * self.context
            if reference:
                excess = torch.clamp(token_losses.detach() - signals.reference_token_losses(self, tokens[rows]), min=0)
                local_excess += self._domain_sums(excess, domain_ids[rows])
            if keep_graph:
                pending.append(domain_sums)
                continue
            # Scale so that the gradient averaged over processes is the mean over the global batch.
            loss = domain_sums.sum() * self.accelerator.num_processes / global_tokens
            is_last = micro == self.accumulation - 1
            if is_last:
                self.accelerator.backward(loss)
            else:
                with self.accelerator.no_sync(self.model):
                    self.accelerator.backward(loss)
        sums = self.accelerator.reduce(local_sums, reduction="sum").cpu().numpy().astype(np.float64)
        counts = self.accelerator.reduce(local_counts, reduction="sum").cpu().numpy().astype(np.float64)
        excess = self.accelerator.reduce(local_excess, reduction="sum").cpu().numpy().astype(np.float64) if reference else None
        return sums, counts, excess, pending

    def _backward_pending(self, pending, counts: np.ndarray, weights: np.ndarray | None) -> None:
        """Backward the kept micro-batch graphs, weighting domains when training by loss weights."""
        processes = self.accelerator.num_processes
        global_tokens = self.batch_size * self.context
        if weights is None:
            scale = torch.full((len(self.domains),), processes / global_tokens)
        elif self.normalization == "domain_mean":
            # Sum over domains of p_j times domain j's mean token loss.
            scale = torch.from_numpy(weights / np.maximum(counts, 1)).float() * processes
        else:
            # One normaliser over all tokens; each token is weighted by p_j over its sampling weight.
            sampling = np.full(len(self.domains), 1.0 / len(self.domains))
            scale = torch.from_numpy(weights / sampling).float() * processes / global_tokens
        scale = scale.to(self.accelerator.device)
        for index, domain_sums in enumerate(pending):
            loss = (domain_sums * scale).sum()
            if index == len(pending) - 1:
                self.accelerator.backward(loss)
            else:
                with self.accelerator.no_sync(self.model):
                    self.accelerator.backward(loss)

    def _check_finite(self, losses: np.ndarray, present: np.ndarray, what: str) -> None:
        """Raise RunFailedError when a present domain's loss is NaN or infinite."""
        if np.all(np.isfinite(losses[present])):
            if what == "training":
                self.last_losses = np.where(present, losses, self.last_losses)
            return
        bad = [self.domains[j] for j in np.flatnonzero(present & ~np.isfinite(losses))]
        raise RunFailedError(
            f"{what} loss became NaN or infinite at step {self.step} on {', '.join(bad)}; "
            f"last finite training losses {dict(zip(self.domains, np.round(self.last_losses, 4).tolist()))}. "
            f"Lower train.lr or enable gradient clipping (train.grad_clip)."
        )

    def lr_scale(self) -> float:
        """Return the current learning rate over the peak learning rate."""
        return float(self.scheduler.get_last_lr()[0] / float(self.settings["lr"]))

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, split: str = "val") -> np.ndarray:
        """Return each domain's mean per-token loss on fixed windows of `split`."""
        if split not in self.eval_windows:
            raise ConfigError(f"unknown split {split!r}; use 'val' or 'test'.")
        started = time.perf_counter()
        self.model.eval()
        processes, rank = self.accelerator.num_processes, self.accelerator.process_index
        sums = torch.zeros(len(self.domains), device=self.accelerator.device, dtype=torch.float64)
        counts = torch.zeros_like(sums)
        batch = int(self.settings["eval_batch_size"])
        for index, windows in enumerate(self.eval_windows[split]):
            local = windows[rank::processes]
            for start in range(0, len(local), batch):
                token_losses = self._token_losses(local[start : start + batch])
                sums[index] += token_losses.double().sum()
                counts[index] += token_losses.numel()
        sums = self.accelerator.reduce(sums, reduction="sum")
        counts = self.accelerator.reduce(counts, reduction="sum")
        self.model.train()
        evaluated = int(counts.sum().item())
        self.compute.eval_tokens += evaluated
        self.compute.flops += 2.0 * self.parameters["non_embedding"] * evaluated
        elapsed = time.perf_counter() - started
        self.compute.wall_time_s += elapsed
        self.compute.eval_time_s += elapsed
        losses = (sums / counts).cpu().numpy()
        self._check_finite(losses, np.ones(len(losses), dtype=bool), f"{split} evaluation")
        return losses

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Return the full training state: model, optimizer, schedule, sampler, RNGs, counters."""
        return {
            "model": self.accelerator.unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "target_sampler": self.target_sampler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "step": self.step,
            "compute": self.compute.as_dict(),
            "last_losses": self.last_losses.copy(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.accelerator.unwrap_model(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.target_sampler.load_state_dict(state["target_sampler"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.compute = Compute(**state["compute"])
        self.last_losses = np.asarray(state["last_losses"])

    def snapshot(self) -> dict:
        return copy.deepcopy(self.state_dict())

    def restore(self, snapshot: dict) -> None:
        self.load_state_dict(copy.deepcopy(snapshot))


# Non-embedding parameters above which a model is meant for a GPU; model=small (about 10M) still
# trains at a few thousand tokens per second on a 2-core CPU.
CPU_MODEL_LIMIT = 50_000_000
_warned_sizes: set[int] = set()


def _warn_large_model_on_cpu(non_embedding: int, device) -> None:
    """Warn once per model size when a model meant for a GPU is trained on the CPU."""
    if torch.device(device).type != "cpu" or non_embedding <= CPU_MODEL_LIMIT or non_embedding in _warned_sizes:
        return
    _warned_sizes.add(non_embedding)
    log.warning(
        "the model has %.1fM non-embedding parameters and trains on the CPU, where each step can take minutes; models "
        "above %dM are meant for a GPU. On a CPU, use model=tiny (the default) or model=small.",
        non_embedding / 1e6, CPU_MODEL_LIMIT // 1_000_000,
    )
