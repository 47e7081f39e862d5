"""Per-step signals that online methods request from the harness.

- Reference losses: a frozen reference model (eval mode, no gradients) scores the same batch, and
  each domain's excess loss is the mean over its tokens of max(l_proxy - l_ref, 0).
- Domain gradients: one backward pass per domain sub-batch, each gradient kept as a flat fp32
  vector on the device and clipped on its own, plus the gradient of a mixed validation batch as
  the target. The optimizer then steps with sum_j p_j g_j.
"""

import numpy as np
import torch

from mixbench.errors import ConfigError
from mixbench.train.model import build_model


def load_reference_model(model_settings: dict, vocab_size: int, path, device) -> torch.nn.Module:
    """Build a model from `model_settings`, load finished weights from `path`, and freeze it."""
    model = build_model(model_settings, vocab_size, seed=0)
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except RuntimeError as error:
        raise ConfigError(
            f"reference weights {path} do not fit the reference model settings ({error}); "
            f"retrain the reference run with the same model settings."
        ) from None
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.to(device)


@torch.no_grad()
def reference_token_losses(backend, tokens: np.ndarray) -> torch.Tensor:
    """Return the reference model's (rows, context) per-token losses on a batch of windows."""
    batch = torch.from_numpy(tokens).to(backend.accelerator.device)
    logits = backend.reference_model(input_ids=batch[:, :-1]).logits.float()
    targets = batch[:, 1:]
    losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    return losses.view(targets.shape)


def _parameters(backend) -> list[torch.nn.Parameter]:
    return [parameter for parameter in backend.model.parameters() if parameter.requires_grad]


def _flat_gradient(loss: torch.Tensor, parameters, out: torch.Tensor | None = None) -> torch.Tensor:
    """Return the gradient of `loss` as one flat fp32 vector, written into `out` when given."""
    gradients = torch.autograd.grad(loss, parameters, allow_unused=True)
    if out is None:
        out = torch.empty(sum(parameter.numel() for parameter in parameters), dtype=torch.float32, device=loss.device)
    offset = 0
    for gradient, parameter in zip(gradients, parameters):
        count = parameter.numel()
        # Copy each piece straight into its slice; concatenating would write every element twice.
        if gradient is None:
            out[offset : offset + count].zero_()
        else:
            out[offset : offset + count].copy_(gradient.reshape(-1))
        offset += count
    return out


def domain_gradients(backend, tokens: np.ndarray, domain_ids: np.ndarray, global_counts: np.ndarray):
    """Return the (m, P) per-domain mean-loss gradients over the global batch, each clipped on its own,
    with the per-domain loss sums and token counts of the global batch.

    Every process differentiates its rows' summed loss, scaled by the global token count of
    the domain, so the all-reduced sum is the gradient of the domain's mean over the global batch.
    The same passes give the losses, so no separate forward pass is needed.
    """
    parameters = _parameters(backend)
    size = sum(parameter.numel() for parameter in parameters)
    m = len(backend.domains)
    device = backend.accelerator.device
    gradients = torch.zeros(m, size, dtype=torch.float32, device=device)
    sums = torch.zeros(m, dtype=torch.float64, device=device)
    counts = torch.zeros(m, dtype=torch.float64, device=device)
    for domain in range(m):
        rows = domain_ids == domain
        if global_counts[domain] == 0 or not rows.any():
            continue
        total = backend._token_losses(tokens[rows]).sum()
        sums[domain] = total.detach().double()
        counts[domain] = float(rows.sum() * backend.context)
        _flat_gradient(total / float(global_counts[domain]), parameters, out=gradients[domain])
    gradients = backend.accelerator.reduce(gradients, reduction="sum")
    sums = backend.accelerator.reduce(sums, reduction="sum").cpu().numpy()
    counts = backend.accelerator.reduce(counts, reduction="sum").cpu().numpy()
    clip = float(backend.settings["grad_clip"])
    if clip > 0:
        norms = gradients.norm(dim=1, keepdim=True)
        gradients.mul_(torch.clamp(clip / (norms + 1e-6), max=1.0))
    return gradients, sums, counts


def target_gradient(backend, target_domains: tuple[str, ...] | None = None) -> torch.Tensor:
    """Return the gradient of the mean loss of a validation batch drawn equally from the target domains.

    The batch has one window per training domain, from `target_domains` only when given.
    """
    m = len(backend.domains)
    if target_domains is None:
        weights = np.full(m, 1.0 / m)
    else:
        weights = np.array([1.0 if domain in target_domains else 0.0 for domain in backend.domains])
        weights /= weights.sum()
    tokens, _ = backend.target_sampler.sample(weights)
    processes, rank = backend.accelerator.num_processes, backend.accelerator.process_index
    local = tokens[rank::processes]
    loss = backend._token_losses(local).sum() / float(tokens.shape[0] * backend.context)
    gradient = _flat_gradient(loss, _parameters(backend))
    return backend.accelerator.reduce(gradient, reduction="sum")


def apply_combined_gradient(backend, gradients: torch.Tensor, weights: np.ndarray) -> None:
    """Set each parameter's gradient to sum_j weights_j * g_j."""
    # One matrix-vector product, without an m x P temporary.
    combined = torch.from_numpy(weights).float().to(gradients.device) @ gradients
    offset = 0
    for parameter in _parameters(backend):
        count = parameter.numel()
        parameter.grad = combined[offset : offset + count].view_as(parameter).to(parameter.dtype)
        offset += count
