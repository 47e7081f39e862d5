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
        sums, counts, _, _ = backend._forward_micro_batches(tokens, domain_ids, keep_graph=True)
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


class RecordingHook:
    def __init__(self, requires, answer=None):
        self.requires = frozenset(requires)
        self.answer = answer
        self.stats = []

    def update(self, stats, mixture):
        self.stats.append(stats)
        return self.answer


def test_reference_losses_give_zero_excess_against_itself(small_corpus, tmp_path):
    backend = make_backend(small_corpus)
    backend.train(4, np.full(3, 1 / 3))
    path = tmp_path / "model.pt"
    torch.save(backend.model.state_dict(), path)
    backend.set_reference_model(dict(TINY_MODEL), path)
    hook = RecordingHook({"reference_loss"})
    backend.train(1, np.full(3, 1 / 3), by_loss_weights=True, hook=hook)
    # The proxy equals the reference before this step's update, so every excess loss is 0.
    np.testing.assert_allclose(hook.stats[0].excess_loss, 0.0, atol=1e-6)


def test_reference_passes_are_counted(small_corpus, tmp_path):
    backend = make_backend(small_corpus)
    path = tmp_path / "model.pt"
    torch.save(backend.model.state_dict(), path)
    backend.set_reference_model(dict(TINY_MODEL), path)
    backend.train(2, np.full(3, 1 / 3), by_loss_weights=True)
    plain_flops = backend.compute.flops
    assert backend.compute.reference_tokens == 0
    backend.train(2, np.full(3, 1 / 3), by_loss_weights=True, hook=RecordingHook({"reference_loss"}))
    batch_tokens = TINY_TRAIN["batch_size"] * TINY_MODEL["context"]
    assert backend.compute.reference_tokens == 2 * batch_tokens
    # The reference is the same model, so its forward pass costs about a third of a training step.
    extra = backend.compute.flops - 2 * plain_flops
    assert extra == pytest.approx(2 * batch_tokens * 2 * backend.parameters["non_embedding"])


def test_reference_losses_need_a_reference_model(small_corpus):
    backend = make_backend(small_corpus)
    with pytest.raises(ConfigError, match="no reference model"):
        backend.train(1, np.full(3, 1 / 3), hook=RecordingHook({"reference_loss"}))


def test_domain_gradients_match_separate_backward_passes(small_corpus):
    backend = make_backend(small_corpus, grad_clip=0.0)
    hook = RecordingHook({"domain_gradients"}, answer=np.array([1.0, 0.0, 0.0]))
    before = {name: value.clone() for name, value in backend.model.state_dict().items()}
    backend.train(1, np.full(3, 1 / 3), hook=hook)
    stats = hook.stats[0]
    assert stats.gradient_gram.shape == (3, 3)
    assert stats.target_alignment.shape == (3,)
    np.testing.assert_allclose(stats.gradient_gram, stats.gradient_gram.T, rtol=1e-6)
    assert np.all(np.diag(stats.gradient_gram) > 0)
    changed = [name for name, value in backend.model.state_dict().items() if not torch.equal(value, before[name])]
    assert changed, "the optimizer step with the combined gradient changed no weight"


class TargetHook(RecordingHook):
    def __init__(self, target):
        super().__init__({"domain_gradients"})
        self.gradient_target = target


def record_target_batches(backend):
    """Wrap the target sampler to record the domains of every target batch."""
    drawn, sample = [], backend.target_sampler.sample

    def recording(weights):
        tokens, domain_ids = sample(weights)
        drawn.append(domain_ids.copy())
        return tokens, domain_ids

    backend.target_sampler.sample = recording
    return drawn


def test_named_target_draws_only_its_domains(small_corpus):
    backend = make_backend(small_corpus)
    drawn = record_target_batches(backend)
    named = small_corpus.domains[1]
    hook = TargetHook([named])
    backend.train(2, np.full(3, 1 / 3), hook=hook)
    assert len(drawn) == 2
    assert all(np.all(ids == 1) for ids in drawn)
    assert all(stats.target_alignment.shape == (3,) for stats in hook.stats)
    # Each target batch has one window per domain, trained through like any batch.
    assert backend.compute.target_tokens == 2 * len(small_corpus.domains) * TINY_MODEL["context"]


def test_train_target_skips_target_pass(small_corpus):
    backend = make_backend(small_corpus)
    drawn = record_target_batches(backend)
    hook = TargetHook("train")
    backend.train(2, np.full(3, 1 / 3), hook=hook)
    assert drawn == []
    assert backend.compute.target_tokens == 0
    assert all(stats.target_alignment is None for stats in hook.stats)
    assert all(stats.gradient_gram.shape == (3, 3) for stats in hook.stats)


def test_unknown_target_domain_rejected(small_corpus):
    backend = make_backend(small_corpus)
    misspelt = small_corpus.domains[0] + "x"
    with pytest.raises(ConfigError, match=f"unknown target domain '{misspelt}'. Did you mean '{small_corpus.domains[0]}'"):
        backend.train(1, np.full(3, 1 / 3), hook=TargetHook([misspelt]))
    with pytest.raises(ConfigError, match="empty list of domains"):
        backend.train(1, np.full(3, 1 / 3), hook=TargetHook([]))
    assert backend.step == 0


def test_unknown_hook_requirement_is_rejected(small_corpus):
    backend = make_backend(small_corpus)
    with pytest.raises(ConfigError, match="does not provide"):
        backend.train(1, np.full(3, 1 / 3), hook=RecordingHook({"hessian"}))


def test_training_past_the_budget_is_rejected(small_corpus):
    backend = make_backend(small_corpus)
    with pytest.raises(ConfigError, match="would pass the budget of 12 steps"):
        backend.train(13, np.full(3, 1 / 3))


def test_llama_family_trains(small_corpus):
    llama = dict(TINY_MODEL, family="llama", n_kv_head=1)
    backend = HarnessBackend(small_corpus, small_corpus.domains, llama, dict(TINY_TRAIN), seed=0)
    before = backend.evaluate("val")
    backend.train(6, np.full(3, 1 / 3))
    after = backend.evaluate("val")
    assert type(backend.model).__name__ == "LlamaForCausalLM"
    assert np.all(after < before)


def test_reference_and_gradients_together_rejected(small_corpus):
    backend = make_backend(small_corpus)
    with pytest.raises(ConfigError, match="both reference_loss and domain_gradients"):
        backend.train(1, np.full(3, 1 / 3), hook=RecordingHook({"reference_loss", "domain_gradients"}))
    assert backend.step == 0


def test_large_model_on_cpu_warns_once(caplog):
    from mixbench.train import harness

    harness._warned_sizes.clear()
    with caplog.at_level("WARNING", logger=harness.log.name):
        harness._warn_large_model_on_cpu(1_000_000, "cpu")
        harness._warn_large_model_on_cpu(85_000_000, "cuda")
        assert caplog.text == ""
        harness._warn_large_model_on_cpu(85_000_000, "cpu")
        harness._warn_large_model_on_cpu(85_000_000, "cpu")
    assert caplog.text.count("the model has 85.0M non-embedding parameters and trains on the CPU") == 1
