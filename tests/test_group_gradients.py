"""Per-group gradients from one pass equal the gradients of separate passes, in every model family."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mixbench.train.group_gradients import GroupGradients
from mixbench.train.harness import HarnessBackend
from mixbench.train.model import build_model

from conftest import TINY_MODEL, TINY_TRAIN
from test_harness import RecordingHook

VOCAB, CONTEXT = 50, 16
# Rows 0-1, row 2, no rows, rows 3-6: groups of different sizes, one of them empty.
BOUNDS = [0, 2, 3, 3, 7]


def small_model(family: str) -> torch.nn.Module:
    settings = dict(family=family, d_model=32, n_layer=2, n_head=4, d_ff=64, context=CONTEXT, attention="sdpa")
    model = build_model(settings, VOCAB, seed=0)
    model.train()
    return model


def token_losses(model, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=tokens[:, :-1]).logits
    return F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1), reduction="none").view(len(tokens), -1)


def separate_gradients(model, parameters, tokens, scales) -> torch.Tensor:
    rows = []
    for group, (start, stop) in enumerate(zip(BOUNDS, BOUNDS[1:])):
        if stop == start:
            rows.append(torch.zeros(sum(p.numel() for p in parameters)))
            continue
        loss = token_losses(model, tokens[start:stop]).sum() * scales[group]
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, parameters)]))
    return torch.stack(rows)


@pytest.mark.parametrize("family", ["gpt2", "llama", "neox"])
def test_one_pass_matches_separate_passes(family):
    torch.manual_seed(1)
    model = small_model(family)
    parameters = list(model.parameters())
    tokens = torch.randint(0, VOCAB, (BOUNDS[-1], CONTEXT + 1))
    scales = [1.0, 0.5, 0.25, 0.125]
    expected = separate_gradients(model, parameters, tokens, scales)

    grouped = GroupGradients(model, parameters)
    assert grouped.supported, grouped.unsupported
    # NaN everywhere shows that every entry is written, none left from before.
    out = torch.full((len(BOUNDS) - 1, grouped.size), float("nan"))
    with grouped.capture(BOUNDS, out):
        row_scales = torch.tensor([scales[g] for g in range(4) for _ in range(BOUNDS[g + 1] - BOUNDS[g])])
        (token_losses(model, tokens).sum(dim=1) * row_scales).sum().backward()

    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-6)
    assert torch.all(out[2] == 0)
    assert all(p.requires_grad and p.grad is None for p in parameters)


def test_tied_embeddings_get_both_contributions():
    model = small_model("gpt2")
    assert model.lm_head.weight is model.transformer.wte.weight
    grouped = GroupGradients(model, list(model.parameters()))
    assert grouped.contributors[id(model.transformer.wte.weight)] == 2


class Scaled(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.gain = torch.nn.Parameter(torch.ones(()))

    def forward(self, input_ids):
        return self.inner(input_ids=input_ids).logits * self.gain


def test_unsupported_layer_is_named():
    model = Scaled(small_model("gpt2"))
    grouped = GroupGradients(model, list(model.parameters()))
    assert not grouped.supported
    assert "Scaled" in grouped.unsupported


def test_failed_pass_restores_requires_grad():
    model = small_model("llama")
    parameters = list(model.parameters())
    grouped = GroupGradients(model, parameters)
    out = torch.empty(len(BOUNDS) - 1, grouped.size)
    with pytest.raises(RuntimeError, match="stop"):
        with grouped.capture(BOUNDS, out):
            assert not any(p.requires_grad for p in parameters)
            raise RuntimeError("stop")
    assert all(p.requires_grad for p in parameters)


class TargetHook(RecordingHook):
    def __init__(self, target, answer):
        super().__init__({"domain_gradients"}, answer=answer)
        self.gradient_target = target


def doge_steps(corpus, separate: bool, target, **train_changes):
    backend = HarnessBackend(corpus, corpus.domains, dict(TINY_MODEL), dict(TINY_TRAIN) | train_changes, seed=0)
    if separate:
        backend.group_gradients.unsupported = "a test's request for separate passes"
    hook = TargetHook(target, answer=np.array([0.6, 0.3, 0.1]))
    result = backend.train(2, np.full(3, 1 / 3), hook=hook)
    weights = torch.cat([p.detach().reshape(-1) for p in backend.model.parameters()])
    return hook.stats, result, weights


@pytest.mark.parametrize("target", [None, "train", ["b"]], ids=["validation", "train", "named"])
@pytest.mark.parametrize("clip", [0.0, 0.05], ids=["unclipped", "clipped"])
def test_harness_one_pass_matches_fallback(small_corpus, target, clip):
    if target == ["b"]:
        target = [small_corpus.domains[1]]
    fast_stats, fast, fast_weights = doge_steps(small_corpus, False, target, grad_clip=clip)
    slow_stats, slow, slow_weights = doge_steps(small_corpus, True, target, grad_clip=clip)
    for fast_step, slow_step in zip(fast_stats, slow_stats):
        np.testing.assert_allclose(fast_step.train_loss, slow_step.train_loss, rtol=1e-5)
        np.testing.assert_array_equal(fast_step.tokens, slow_step.tokens)
        np.testing.assert_allclose(fast_step.gradient_gram, slow_step.gradient_gram, rtol=1e-3, atol=1e-9)
        if target == "train":
            assert fast_step.target_alignment is None
            assert slow_step.target_alignment is None
        else:
            np.testing.assert_allclose(fast_step.target_alignment, slow_step.target_alignment, rtol=1e-3, atol=1e-9)
    np.testing.assert_allclose(fast.train_loss, slow.train_loss, rtol=1e-5)
    torch.testing.assert_close(fast_weights, slow_weights, rtol=1e-4, atol=1e-6)
    if clip:
        # The clipped Gram matrix has no diagonal entry above clip squared.
        assert np.all(np.diag(fast_stats[0].gradient_gram) <= clip**2 * (1 + 1e-4))


def test_step_combines_clipped_domain_gradients(small_corpus):
    """The optimizer receives sum_j p_j * clip(g_j), computed here with plain autograd on the same batch."""
    clip, answer = 0.05, np.array([0.6, 0.3, 0.1])
    train = dict(TINY_TRAIN) | {"grad_clip": clip}
    backend = HarnessBackend(small_corpus, small_corpus.domains, dict(TINY_MODEL), train, seed=0)
    twin = HarnessBackend(small_corpus, small_corpus.domains, dict(TINY_MODEL), train, seed=0)
    seen = []

    def record(optimizer, args, kwargs):
        seen.append(torch.cat([p.grad.reshape(-1).clone() for p in backend.model.parameters()]))

    backend.optimizer.optimizer.register_step_pre_hook(record)
    backend.train(1, np.full(3, 1 / 3), hook=TargetHook("train", answer=answer))

    tokens, domain_ids = twin.sampler.sample(np.full(3, 1 / 3))
    parameters = list(twin.model.parameters())
    expected = torch.zeros_like(seen[0])
    for domain in range(3):
        rows = domain_ids == domain
        loss = twin._token_losses(tokens[rows]).sum() / (rows.sum() * TINY_MODEL["context"])
        gradient = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, parameters)])
        expected += answer[domain] * gradient * min(1.0, clip / (gradient.norm().item() + 1e-6))
    torch.testing.assert_close(seen[0], expected, rtol=1e-4, atol=1e-7)


def test_bf16_one_pass_close_to_fallback(small_corpus):
    fast_stats, _, _ = doge_steps(small_corpus, False, None, bf16=True)
    slow_stats, _, _ = doge_steps(small_corpus, True, None, bf16=True)
    # bf16 products round differently when the rows are split another way, so only closeness is checked.
    np.testing.assert_allclose(fast_stats[0].gradient_gram, slow_stats[0].gradient_gram, rtol=0.05, atol=1e-8)
    np.testing.assert_allclose(fast_stats[0].target_alignment, slow_stats[0].target_alignment, rtol=0.05, atol=1e-8)


def test_accumulation_uses_separate_passes(small_corpus, caplog):
    with caplog.at_level("INFO", logger="mixbench.train.signals"):
        stats, _, _ = doge_steps(small_corpus, False, None, grad_accumulation=2)
    assert "train.grad_accumulation=2" in caplog.text
    reference, _, _ = doge_steps(small_corpus, True, None)
    np.testing.assert_allclose(stats[0].gradient_gram, reference[0].gradient_gram, rtol=1e-4, atol=1e-9)


def test_padding_embedding_is_unsupported():
    model = small_model("llama")
    model.model.embed_tokens.padding_idx = 0
    grouped = GroupGradients(model, list(model.parameters()))
    assert not grouped.supported
    assert "embed_tokens" in grouped.unsupported


def test_matrix_reused_across_calls():
    model = small_model("gpt2")
    grouped = GroupGradients(model, list(model.parameters()))
    first = grouped.matrix(4, "cpu")
    second = grouped.matrix(3, torch.device("cpu"))
    assert second.data_ptr() == first.data_ptr()
    assert second.shape == (3, grouped.size)
