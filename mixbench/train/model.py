"""Small causal language models built from transformers configs, with no downloaded weights."""

import logging

import torch
from transformers import AttentionInterface, AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig, PretrainedConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from mixbench.errors import ConfigError, unknown_name_error

log = logging.getLogger(__name__)

FAMILIES = ("gpt2", "llama", "neox")
# Attention implementations a model can be built with. flash_attention_2 needs the flash-attn package and a CUDA GPU.
ATTENTIONS = ("sdpa", "eager", "flash_attention_2")
# The activation of each family that does not read model.activation (GPT-2 reads it).
FAMILY_ACTIVATIONS = {"llama": "silu", "neox": "gelu"}
_logged_activation = set()


def model_config(settings: dict, vocab_size: int) -> PretrainedConfig:
    """Translate mixbench's model settings into a transformers config of the chosen family."""
    family = settings.get("family", "gpt2")
    if family not in FAMILIES:
        raise unknown_name_error("model family", family, FAMILIES, "Set model.family to one of them.")
    d_model, n_head = int(settings["d_model"]), int(settings["n_head"])
    if d_model % n_head:
        raise ConfigError(
            f"model.d_model={d_model} is not divisible by model.n_head={n_head}; "
            f"pick a head count that divides the width."
        )
    context = int(settings["context"])
    dropout = float(settings.get("dropout", 0.0))
    check_attention(settings.get("attention", "sdpa"))
    activation = _checked_activation(settings.get("activation"))
    if family == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=context,
            n_embd=d_model,
            n_layer=int(settings["n_layer"]),
            n_head=n_head,
            n_inner=int(settings.get("d_ff", 4 * d_model)),
            # GPT-2's tanh-approximate GELU. "gelu_pytorch_tanh" computes it in one fused kernel, which
            # trained the tiny model 1.2x faster on a CPU than "gelu_new", the op-by-op form.
            activation_function=activation or "gelu_new",
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            tie_word_embeddings=True,
            bos_token_id=None,
            eos_token_id=None,
        )
    if family == "neox":
        # transformers' GPT-NeoX defaults (checked with transformers 5.25) are the Pythia architecture:
        # rotary embeddings on a quarter of each head's dimensions with base 10000, and GELU.
        return GPTNeoXConfig(
            vocab_size=vocab_size,
            hidden_size=d_model,
            intermediate_size=int(settings.get("d_ff", 4 * d_model)),
            num_hidden_layers=int(settings["n_layer"]),
            num_attention_heads=n_head,
            max_position_embeddings=context,
            attention_dropout=dropout,
            hidden_dropout=dropout,
            use_parallel_residual=True,
            # Pythia keeps separate input and output embeddings.
            tie_word_embeddings=False,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
        )
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=int(settings.get("d_ff", 4 * d_model)),
        num_hidden_layers=int(settings["n_layer"]),
        num_attention_heads=n_head,
        num_key_value_heads=int(settings.get("n_kv_head", n_head)),
        max_position_embeddings=context,
        attention_dropout=dropout,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


def check_attention(attention) -> None:
    """Raise ConfigError for an attention implementation that cannot build the model here."""
    if attention is None:
        raise ConfigError(f"model.attention=null is invalid; set model.attention to one of {', '.join(ATTENTIONS)}.")
    if attention not in ATTENTIONS:
        raise unknown_name_error("attention implementation", str(attention), ATTENTIONS, "Set model.attention to one of them.")
    if attention == "flash_attention_2":
        from transformers.utils import is_flash_attn_2_available

        if not is_flash_attn_2_available():
            raise ConfigError("model.attention=flash_attention_2 needs the flash-attn package and a CUDA GPU, and this "
                              "machine lacks one of them; set model.attention=sdpa.")


def _checked_activation(activation) -> str | None:
    """Return model.activation after checking its name."""
    from transformers.activations import ACT2FN

    if activation is None:
        return None
    if activation not in ACT2FN:
        raise unknown_name_error("activation function", str(activation), sorted(ACT2FN), "Set model.activation to one of them.")
    return str(activation)


def family_settings(settings: dict) -> dict:
    """Return model settings without `activation` where the family does not read it (llama, neox).

    Runs that differ only in a setting their model ignores then share one run id. The model
    config files set GPT-2's activation, so this is logged once per family and activation.
    """
    family = settings.get("family", "gpt2")
    own = FAMILY_ACTIVATIONS.get(family)
    if own is None or settings.get("activation") is None:
        return settings
    activation = settings["activation"]
    if (family, activation) not in _logged_activation:
        _logged_activation.add((family, activation))
        log.info("model.activation=%s is read by the gpt2 family only; %s models use %s, so it is left out of the run's settings.",
                 activation, family, own)
    return {key: value for key, value in settings.items() if key != "activation"}


# The name under which `model.attention=sdpa` is registered with transformers.
CPU_SDPA = "mixbench_sdpa"


def _sdpa_float32_on_cpu(module, query, key, value, attention_mask, **kwargs):
    """transformers' sdpa attention, computed in float32 when bf16 or fp16 inputs sit on a CPU.

    Under bf16 autocast on a CPU with AMX, torch 2.13's flash-attention backward in bf16 took five
    times as long as in float32 (3M-parameter model, 2 threads), which cancelled what the bf16 matrix
    products gained. Attention in float32 is also the more accurate of the two.
    """
    if query.device.type != "cpu" or query.dtype == torch.float32:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    with torch.autocast("cpu", enabled=False):
        output, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)
    return output.to(query.dtype), weights


AttentionInterface.register(CPU_SDPA, _sdpa_float32_on_cpu)
AttentionMaskInterface.register(CPU_SDPA, sdpa_mask)


def build_model(settings: dict, vocab_size: int, seed: int) -> torch.nn.Module:
    """Build a randomly initialised causal LM; `seed` fixes the initial weights."""
    config = model_config(settings, vocab_size)
    attention = settings.get("attention", "sdpa")
    config._attn_implementation = CPU_SDPA if attention == "sdpa" else attention
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=config._attn_implementation)
    return model


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Count all parameters and the non-embedding ones (token, position and untied output embeddings excluded)."""
    total = sum(parameter.numel() for parameter in model.parameters())
    embedding = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            embedding += module.weight.numel()
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = output is not None and output.weight is model.get_input_embeddings().weight
    if output is not None and not tied:
        embedding += output.weight.numel()
    return {"total": total, "non_embedding": total - embedding}


def flops_per_token(settings: dict, non_embedding_params: int) -> float:
    """Estimate training FLOPs per token: 6N for the weights plus the attention scores."""
    attention = 6 * int(settings["n_layer"]) * int(settings["context"]) * int(settings["d_model"])
    return 6.0 * non_embedding_params + attention
