import numpy as np
import pytest
import torch

from mixbench.errors import ConfigError, MixtureError
from mixbench.train.harness import HarnessBackend, warmup_cosine

from conftest import TINY_MODEL, TINY_TRAIN


def make_backend(corpus, **train_changes):
    return HarnessBackend(corpus, corpus.domains, dict(TINY_MODEL), dict(TINY_TRAIN) | train_changes, seed=0)


def test_mixed_batch_losses_equal_separate_domains(small_corpus):
    backend = make_backend(small_corpus)
    tokens, domain_ids = backend.sampler.sample(np.array([0.4, 0.3, 0.3]))
    backend.model.eval()
    with torch.no_grad():
        sums, counts, _ = backend._forward_micro_batches(tokens, domain_ids, keep_graph=True)
        mixed = sums / counts
        for domain in range(len(small_corpus.domains)):
            rows = domain_ids == domain
            separate = backend._token_losses(tokens[rows]).mean().item()
            assert mixed[domain] == pytest.approx(separate, rel=1e-5)


def test_gradient_accumulation_matches_one_large_batch(small_corpus):
    results = []
    for accumulation in (1, 4):
        backend = make_backend(small_corpus, grad_accumulation=accumulation)
        backend.train(3, np.array([0.5, 0.25, 0.25]))
        results.append(backend.evaluate("val"))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-4)


def test_training_lowers_validation_loss(small_corpus):
    backend = make_backend(small_corpus, steps=30)
    before = backend.evaluate("val")
    backend.train(30, np.full(3, 1 / 3))
    after = backend.evaluate("val")
    assert np.all(after < before - 0.5)


def test_loss_weights_sample_uniformly_and_count_tokens(small_corpus):
    backend = make_backend(small_corpus)
    result = backend.train(4, np.array([0.8, 0.1, 0.1]), by_loss_weights=True)
    assert result.tokens.sum() == 4 * 8 * TINY_MODEL["context"]
    assert backend.compute.train_tokens == result.tokens.sum()
    exploration = backend.train(2, np.array([0.8, 0.1, 0.1]), purpose="exploration")
    assert backend.compute.exploration_tokens == exploration.tokens.sum()


def test_train_rejects_mixture_off_simplex(small_corpus):
    backend = make_backend(small_corpus)
    with pytest.raises(MixtureError, match="sums to 1.2"):
        backend.train(1, np.array([0.6, 0.3, 0.3]))
    assert backend.step == 0


def test_hook_sees_each_step_and_changes_mixture(small_corpus):
    class Hook:
        requires = frozenset()

        def __init__(self):
            self.steps = []

        def update(self, stats, mixture):
            self.steps.append(stats.step)
            assert stats.train_loss.shape == (3,)
            return np.array([1.0, 0.0, 0.0])

    backend = make_backend(small_corpus)
    hook = Hook()
    result = backend.train(3, np.full(3, 1 / 3), hook=hook)
    assert hook.steps == [0, 1, 2]
    # The first batch was drawn before the hook ran; later batches follow the new mixture.
    assert result.mixtures[-1].tolist() == [1.0, 0.0, 0.0]


def test_batch_size_must_divide_by_accumulation(small_corpus):
    with pytest.raises(ConfigError, match="grad_accumulation=3"):
        make_backend(small_corpus, grad_accumulation=3)


def test_warmup_cosine_schedule_shape():
    assert warmup_cosine(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(55, 10, 100, 0.1) == pytest.approx(0.55)
