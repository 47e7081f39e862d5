"""Draw training batches per domain according to the current mixture."""

import numpy as np

from mixbench.errors import ConfigError

SAMPLING_MODES = ("multinomial", "largest_remainder")


def domain_counts(mixture: np.ndarray, batch_size: int, mode: str, rng: np.random.Generator) -> np.ndarray:
    """Split `batch_size` sequences among domains according to `mixture`.

    "multinomial" draws the counts at random; "largest_remainder" rounds batch_size * p
    deterministically so that the counts always sum to batch_size.
    """
    if mode == "multinomial":
        return rng.multinomial(batch_size, mixture)
    if mode == "largest_remainder":
        exact = batch_size * np.asarray(mixture)
        counts = np.floor(exact).astype(np.int64)
        remainder = batch_size - int(counts.sum())
        # Ties go to the lower domain index, so the result does not depend on sort stability.
        order = np.lexsort((np.arange(len(exact)), -(exact - counts)))
        counts[order[:remainder]] += 1
        return counts
    raise ConfigError(f"unknown train.sampling={mode!r}; use one of {', '.join(SAMPLING_MODES)}.")


class MixtureSampler:
    """Sample windows of `context + 1` tokens from per-domain token arrays.

    Every process draws the same global batch from one generator and keeps its own slice,
    so the sequence of batches does not depend on the number of processes.
    """

    def __init__(self, arrays: list[np.ndarray], context: int, batch_size: int, seed: int, mode: str):
        self.arrays = arrays
        self.window = context + 1
        self.batch_size = batch_size
        self.mode = mode
        self.rng = np.random.default_rng(seed)
        for array in arrays:
            if len(array) < self.window:
                raise ConfigError(f"a domain has {len(array)} tokens, fewer than one window of {self.window}.")

    def sample(self, mixture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return `(tokens, domain_ids)`: (batch, context + 1) int64 windows and each row's domain."""
        counts = domain_counts(mixture, self.batch_size, self.mode, self.rng)
        domain_ids = np.repeat(np.arange(len(counts)), counts)
        tokens = np.empty((self.batch_size, self.window), dtype=np.int64)
        for row, domain in enumerate(domain_ids):
            array = self.arrays[domain]
            start = int(self.rng.integers(0, len(array) - self.window + 1))
            tokens[row] = array[start : start + self.window]
        return tokens, domain_ids

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


def evaluation_window_count(num_tokens: int, context: int, max_tokens: int) -> int:
    """Return the number of windows `evaluation_windows` takes from a split of `num_tokens` tokens."""
    available = (num_tokens - 1) // context
    return max(1, min(available, max_tokens // context))


def evaluation_windows(array: np.ndarray, context: int, max_tokens: int) -> np.ndarray:
    """Return non-overlapping (k, context + 1) windows evenly spread over `array`.

    They cover at most `max_tokens` predicted tokens, so evaluation is deterministic and its cost
    is bounded however large the split is.
    """
    window = context + 1
    count = evaluation_window_count(len(array), context, max_tokens)
    starts = np.linspace(0, len(array) - window, num=count).astype(np.int64)
    return np.stack([np.asarray(array[start : start + window], dtype=np.int64) for start in starts])
