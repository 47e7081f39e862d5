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


def leave_process_group(finished: bool = True) -> None:
    """Shut down the process group, if this process joined one, before the interpreter exits.

    A rank that exits with its gloo group alive can abort in the group's destructor. After a
    finished command the ranks first meet at a barrier, so that none tears the group down while
    another still uses it. After an error they do not wait, because the other ranks may never arrive.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()
