"""One Accelerate `Accelerator` per process, created with the settings the harness needs."""

import logging

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState

log = logging.getLogger(__name__)

_current: tuple[tuple, Accelerator] | None = None


def get_accelerator(mixed_precision: str = "no") -> Accelerator:
    """Return the process's Accelerator, recreating it when `mixed_precision` changes.

    Without a GPU the Accelerator is created with `cpu=True`: under torchrun a plain
    `Accelerator()` on a machine without an accelerator does not join the process group.
    """
    global _current
    key = (mixed_precision,)
    if _current is not None and _current[0] == key:
        return _current[1]
    if _current is not None:
        # Accelerate keeps its settings in process-wide singletons; clear them before changing.
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
    on_gpu = torch.cuda.is_available()
    # The schedule counts optimizer steps of the global batch. By default Accelerate would step a
    # prepared scheduler once per process for every optimizer step.
    accelerator = Accelerator(cpu=not on_gpu, mixed_precision=mixed_precision, step_scheduler_with_optimizer=False)
    _current = (key, accelerator)
    return accelerator
