"""The real setting: a prepared corpus, model and training settings, run through the harness."""

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mixbench.errors import ConfigError, unknown_name_error
from mixbench.method import MethodContext, Probe
from mixbench.runs import RunSpec

log = logging.getLogger(__name__)
_warned_slow_bf16 = False


# Roles of prerequisite runs that skip the final test evaluation (DoReMi's reference is a final run).
UNTESTED_ROLES = ("probe", "single_domain")


@dataclass
class CorpusSetting:
    """Runs on a prepared corpus; `domains` may be a subset of the corpus's domains."""

    name: str
    corpus: object
    domains: tuple[str, ...]
    model: dict
    train: dict
    _train_tokens: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self.domains = tuple(self.domains)
        self._train_tokens = np.array([self.corpus.num_tokens(d, "train") for d in self.domains], dtype=np.float64)

    def context(self, seed: int) -> MethodContext:
        return MethodContext(
            domains=self.domains,
            eval_sets=self.domains,
            train_tokens=self._train_tokens.copy(),
            total_steps=int(self.train["steps"]),
            tokens_per_step=int(self.train["batch_size"]) * int(self.model["context"]),
            seed=seed,
        )

    def spec(self, seed: int, *, mixture=None, method=None, probe: Probe | None = None, role: str = "final") -> RunSpec:
        model, train = dict(self.model), dict(self.train)
        if probe is not None:
            model.update(probe_model_settings(probe.model, MODEL_KEYS))
            train.update(probe_train_settings(probe.train, TRAIN_KEYS))
            if probe.steps is not None:
                train["warmup_steps"], train["steps"] = probe_schedule(probe.steps, train)
            check_settings(model, train)
            mixture = probe.mixture
            seed = probe.seed if probe.seed is not None else seed
            if probe.role in UNTESTED_ROLES:
                # Methods read only the validation losses of such a run, because the test split is
                # for reporting final models. The key is part of the run id.
                train["test_pass"] = False
        from mixbench.train.model import family_settings

        model = family_settings(model)
        data = {
            "fingerprint": self.corpus.fingerprint,
            "tokenizer": self.corpus.tokenizer_id,
            "domains": list(self.domains),
        }
        return RunSpec(
            data=data,
            model=model,
            train=train,
            seed=int(seed),
            mixture=tuple(float(w) for w in mixture) if mixture is not None else None,
            method=method,
            role=role,
        )

    def make_backend(self, spec: RunSpec):
        from mixbench.train.harness import HarnessBackend

        return HarnessBackend(self.corpus, spec.data["domains"], spec.model, spec.train, spec.seed)

    def final_metrics(self, backend, test_losses: np.ndarray | None) -> dict:
        if test_losses is None:
            return {"test_perplexity": None, "test_bits_per_byte": None, "parameters": backend.parameters}
        bytes_per_token = np.array([self.corpus.bytes_per_token(d, "test") for d in self.domains])
        return {
            "test_perplexity": np.exp(test_losses).tolist(),
            "test_bits_per_byte": (test_losses / math.log(2) / bytes_per_token).tolist(),
            "parameters": backend.parameters,
        }

    def save_model(self, backend, run_dir: Path) -> None:
        """Keep the final weights, so that the run can serve as another method's reference model."""
        import torch

        weights = backend.accelerator.unwrap_model(backend.model).state_dict()
        temporary = run_dir / ".final_model.pt.tmp"
        torch.save(weights, temporary)
        os.replace(temporary, run_dir / "final_model.pt")

    def attach_reference(self, backend, spec: RunSpec, reference: RunSpec, reference_dir: Path) -> None:
        """Load a finished run's final weights as the backend's reference model."""
        check_reference(spec, reference)
        path = reference_dir / "final_model.pt"
        if not path.exists():
            raise ConfigError(f"reference run {reference.id} has no final model at {path}; delete {reference_dir} to retrain it.")
        backend.set_reference_model(reference.model, path)

    def is_main_process(self) -> bool:
        from mixbench.train.accelerator import get_accelerator

        return get_accelerator("bf16" if self.train.get("bf16") else "no").is_main_process


# The settings the harness reads. A key outside these would be ignored without a word, so it is
# rejected: a misspelt `+train.step=40` must not train the default number of steps.
TRAIN_KEYS = (
    "steps", "batch_size", "grad_accumulation", "lr", "min_lr_ratio", "warmup_steps", "weight_decay", "grad_clip",
    "sampling", "loss_normalization", "bf16", "eval_every", "eval_tokens", "test_tokens", "eval_batch_size",
    "checkpoint_every", "threads", "trackers", "tracker_dir",
)
MODEL_CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "model"
MODEL_KEYS = ("family", "d_model", "n_layer", "n_head", "n_kv_head", "d_ff", "context", "dropout", "activation", "attention")


def model_file_settings(name: str) -> dict:
    """Return the settings of the model config file conf/model/<name>.yaml."""
    from omegaconf import OmegaConf

    path = MODEL_CONF_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(file.stem for file in MODEL_CONF_DIR.glob("*.yaml"))
        raise ConfigError(f"model config {name!r} not found in {MODEL_CONF_DIR}; use one of {', '.join(known)}.")
    return dict(OmegaConf.to_container(OmegaConf.load(path), resolve=True))


def probe_model_settings(model, known: tuple[str, ...] | None) -> dict:
    """Return a probe's model overrides: `model` is a dict of model settings or the name of a conf/model file.

    With `known`, a key outside it raises ConfigError, because the run would ignore it and train
    the main model.
    """
    if isinstance(model, str):
        return model_file_settings(model)
    if not hasattr(model, "items"):
        raise ConfigError(f"a probe's model={model!r} is invalid; give a dict of model settings, such as "
                          f"{{'d_model': 64}}, or the name of a conf/model file, such as 'probe'.")
    unknown = [str(key) for key in model if known is not None and key not in known]
    if unknown:
        raise ConfigError(f"a probe's model sets {', '.join(unknown)}, which is not a model setting; the settings are "
                          f"{', '.join(known)}. To probe with a conf/model file, give its name, as in model='probe'.")
    return dict(model)


def probe_train_settings(train, known: tuple[str, ...]) -> dict:
    """Return a probe's training overrides after checking that each key is a training setting of the run."""
    unknown = [str(key) for key in train if key not in known]
    if unknown:
        raise ConfigError(f"a probe's train sets {', '.join(unknown)}, which is not a training setting here; "
                          f"the settings are {', '.join(known)}.")
    return dict(train)


def probe_schedule(steps, train: dict) -> tuple[int, int]:
    """Return (warmup steps, steps) of a probe of `steps` steps: the main run's warmup fraction, not its length."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError(f"a probe's steps={steps!r} is invalid; a probe run trains a whole number of steps >= 1.")
    fraction = int(steps) / int(train["steps"])
    return int(round(int(train["warmup_steps"]) * fraction)), int(steps)


def check_settings(model: dict, train: dict) -> None:
    """Raise ConfigError for model and training settings that are unknown, invalid or conflict."""
    from mixbench.trackers import tracker_names

    for group, values, known in (("train", train, TRAIN_KEYS), ("model", model, MODEL_KEYS)):
        for key in values:
            if key not in known:
                raise unknown_name_error(f"{group} setting", str(key), known, f"Fix or remove {group}.{key}.")
    # Tracker names and packages are checked here too, so that a run reused from the store cannot hide a typo.
    tracker_names(train)
    positive = {"train.steps": train.get("steps"), "train.batch_size": train.get("batch_size"), "train.lr": train.get("lr"),
                "model.context": model.get("context"), "train.grad_accumulation": train.get("grad_accumulation", 1),
                "train.eval_tokens": train.get("eval_tokens"), "train.eval_batch_size": train.get("eval_batch_size"),
                "train.test_tokens": train.get("test_tokens", train.get("eval_tokens"))}
    for key, value in positive.items():
        if value is None or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{key}={value!r} is invalid; it must be a positive number.")
    for key in ("eval_every", "checkpoint_every", "warmup_steps"):
        value = train.get(key, 0)
        if not isinstance(value, int) or value < 0:
            raise ConfigError(f"train.{key}={value!r} is invalid; it must be a whole number >= 0.")
    if train["warmup_steps"] >= train["steps"]:
        raise ConfigError(
            f"train.warmup_steps={train['warmup_steps']} is not below train.steps={train['steps']}; "
            f"lower the warmup or train longer."
        )
    if not 0 <= float(train.get("min_lr_ratio", 0)) <= 1:
        raise ConfigError(f"train.min_lr_ratio={train.get('min_lr_ratio')} must lie in [0, 1].")
    if train["batch_size"] % train.get("grad_accumulation", 1):
        raise ConfigError(
            f"train.batch_size={train['batch_size']} is not divisible by train.grad_accumulation="
            f"{train['grad_accumulation']}; pick a batch size that is a multiple of it."
        )
    if not isinstance(train.get("bf16", False), bool):
        raise ConfigError(f"train.bf16={train.get('bf16')!r} is invalid; set train.bf16=true or train.bf16=false.")
    if train.get("bf16") and not _bf16_supported():
        raise ConfigError("train.bf16=true but this device does not support bfloat16; set train.bf16=false.")
    if train.get("bf16"):
        _warn_if_bf16_emulated()
    from mixbench.train.model import model_config
    from mixbench.train.sampler import SAMPLING_MODES

    # Building the transformers config checks the family, widths and head counts.
    model_config(model, vocab_size=256)

    if train.get("sampling") not in SAMPLING_MODES:
        raise ConfigError(f"train.sampling={train.get('sampling')!r} is unknown; use one of {', '.join(SAMPLING_MODES)}.")


def _bf16_supported() -> bool:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return True


def _cpu_has_native_bf16() -> bool:
    """Return whether this CPU has bfloat16 instructions (AVX-512 BF16 or AMX). Without them torch emulates bf16."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        # Some torch builds lack these private checks. Assume native bf16 then, so that no false warning is logged.
        return True


def _warn_if_bf16_emulated() -> None:
    """Warn once per process when bf16 autocast would run on a CPU that emulates bfloat16."""
    global _warned_slow_bf16
    import torch

    if _warned_slow_bf16 or torch.cuda.is_available() or _cpu_has_native_bf16():
        return
    _warned_slow_bf16 = True
    log.warning(
        "train.bf16=true on a CPU without bfloat16 instructions (torch reports %s): torch emulates bf16 there, "
        "and a bf16 step of the tiny model took 17 times as long as an fp32 one on such a CPU; "
        "set train.bf16=false unless you are testing bf16 itself.", torch.backends.cpu.get_cpu_capability())


def check_reference(spec: RunSpec, reference: RunSpec) -> None:
    """Raise ConfigError unless a reference run was trained on the same data and tokenizer as `spec`."""
    if reference.data != spec.data:
        differing = sorted(key for key in set(spec.data) | set(reference.data) if spec.data.get(key) != reference.data.get(key))
        raise ConfigError(
            f"reference run {reference.id} was trained on other data ({', '.join(differing)} differ: "
            f"{ {key: reference.data.get(key) for key in differing} } versus { {key: spec.data.get(key) for key in differing} }); "
            f"train the reference on the same corpus, domains and tokenizer."
        )
