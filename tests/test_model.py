"""The model builder: `model.attention=sdpa` keeps transformers' sdpa in float32 and runs bf16 attention on a CPU in float32."""

import logging

import pytest
import torch
import torch.nn.functional as F

from mixbench.errors import ConfigError
from mixbench.train import model as model_module
from mixbench.train.model import CPU_SDPA, build_model, model_config

SETTINGS = {"d_model": 32, "n_layer": 2, "n_head": 4, "d_ff": 64, "context": 16, "dropout": 0.0}
VOCAB = 50


def _inputs(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (3, SETTINGS["context"]), generator=generator)


@pytest.mark.parametrize("family", ["gpt2", "llama", "neox"])
def test_float32_logits_match_transformers_sdpa(family):
    ours = build_model(dict(SETTINGS, family=family, attention="sdpa"), VOCAB, seed=3)
    assert ours.config._attn_implementation == CPU_SDPA
    plain = build_model(dict(SETTINGS, family=family, attention="sdpa"), VOCAB, seed=3)
    plain.config._attn_implementation = "sdpa"
    tokens = _inputs()
    with torch.no_grad():
        assert torch.equal(ours(input_ids=tokens).logits, plain(input_ids=tokens).logits)


def test_eager_setting_kept():
    model = build_model(dict(SETTINGS, family="gpt2", attention="eager"), VOCAB, seed=0)
    assert model.config._attn_implementation == "eager"


def test_bf16_autocast_attention_runs_in_float32(monkeypatch):
    seen = []
    original = F.scaled_dot_product_attention

    def recording(query, key, value, *args, **kwargs):
        seen.append((query.dtype, key.dtype, value.dtype))
        return original(query, key, value, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    model = build_model(dict(SETTINGS, family="gpt2", attention="sdpa"), VOCAB, seed=1)
    tokens = _inputs(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=tokens).logits
    logits.float().sum().backward()
    assert seen == [(torch.float32,) * 3] * SETTINGS["n_layer"]
    # Linear layers still run in bf16, so the logits come out in bf16 and gradients reach every weight.
    assert logits.dtype == torch.bfloat16
    assert all(parameter.grad is not None for parameter in model.parameters())


def test_bf16_causal_masking_kept():
    model = build_model(dict(SETTINGS, family="llama", attention="sdpa"), VOCAB, seed=2)
    tokens = _inputs(2)
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % VOCAB
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        before, after = model(input_ids=tokens).logits, model(input_ids=changed).logits
    # Changing the last token must not change any earlier position's prediction.
    assert torch.equal(before[:, :-1], after[:, :-1])
    assert not torch.equal(before[:, -1], after[:, -1])


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("attention", "eagr", r"unknown attention implementation 'eagr'\. Did you mean 'eager'\?"),
    ("attention", None, r"model.attention=null is invalid; set model.attention to one of sdpa, eager"),
    ("activation", "gelux", r"unknown activation function 'gelux'\. Did you mean 'gelu'"),
])
def test_unknown_attention_or_activation_rejected(key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        model_config(dict(SETTINGS, family="gpt2", **{key: value}), VOCAB)


def test_flash_attention_needs_package(monkeypatch):
    monkeypatch.setattr("transformers.utils.is_flash_attn_2_available", lambda: False)
    with pytest.raises(ConfigError, match="model.attention=flash_attention_2 needs the flash-attn package and a CUDA GPU"):
        model_config(dict(SETTINGS, family="gpt2", attention="flash_attention_2"), VOCAB)


def test_activation_left_out_where_unread(monkeypatch, caplog):
    monkeypatch.setattr(model_module, "_logged_activation", set())
    settings = dict(SETTINGS, family="llama", activation="gelu_pytorch_tanh")
    with caplog.at_level(logging.INFO, logger="mixbench.train.model"):
        stripped = [model_module.family_settings(settings) for _ in range(2)]
    # llama reads no activation setting, so it leaves the settings (and the run id); gpt2 keeps it.
    assert stripped == [dict(SETTINGS, family="llama")] * 2
    assert model_config(stripped[0], VOCAB).hidden_act == "silu"
    assert [record.getMessage() for record in caplog.records] == [
        "model.activation=gelu_pytorch_tanh is read by the gpt2 family only; llama models use silu, so it is left out of "
        "the run's settings."]
    gpt2 = dict(SETTINGS, family="gpt2", activation="gelu_new")
    assert model_module.family_settings(gpt2) == gpt2
