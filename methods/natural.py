"""Natural sampling: each domain in proportion to its training tokens."""

import numpy as np

from mixbench.method import MethodContext, StaticMethod, register
from mixbench.simplex import proportional


@register
class Natural(StaticMethod):
    """Train on the corpus as it comes: p_j proportional to domain j's training tokens."""

    name = "natural"

    def __init__(self):
        pass

    def optimize(self, context: MethodContext) -> np.ndarray:
        return proportional(context.train_tokens)
