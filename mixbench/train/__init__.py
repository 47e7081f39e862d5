"""The Accelerate training harness: model, mixture sampler, per-domain evaluation, checkpoints."""

from mixbench.train.harness import HarnessBackend

__all__ = ["HarnessBackend"]
