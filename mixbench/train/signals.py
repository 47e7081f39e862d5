"""Per-step signals that online methods request from the harness.

- Reference losses: a frozen reference model (eval mode, no gradients) scores the same batch, and
  each domain's excess loss is the mean over its tokens of max(l_proxy - l_ref, 0).
- Domain gradients: each domain sub-batch's gradient as a flat fp32 vector on the device, clipped
  on its own, plus the gradient of a mixed validation batch as the target. All of them come from
  one forward and backward pass where the model allows it (see `group_gradients`), else from one
  pass each. The optimizer then steps with sum_j p_j g_j.
"""

import dataclasses
import logging

import numpy as np
import torch

from mixbench.backend import TRAIN_TARGET
from mixbench.errors import ConfigError
from mixbench.train.model import build_model

log = logging.getLogger(__name__)


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


@dataclasses.dataclass
class DomainGradients:
    """One step's domain gradients and what the step hook and the update need from them.

    `gradients` contains the unclipped (m, P) gradients, and `scale` each domain's clipping factor,
    so domain j's clipped gradient is scale_j * g_j. `gram` and `alignment` are computed from the
    clipped gradients; `alignment` is None without a target.
    """

    gradients: torch.Tensor
    scale: np.ndarray
    gram: np.ndarray
    alignment: np.ndarray | None
    sums: np.ndarray
    counts: np.ndarray


def domain_gradients(backend, tokens: np.ndarray, domain_ids: np.ndarray, global_counts: np.ndarray, target_domains):
    """Return the per-domain mean-loss gradients over the global batch, each clipped on its own, with
    their Gram matrix, their alignment with the target gradient (unless `target_domains` is
    TRAIN_TARGET), and the per-domain loss sums and token counts of the global batch.

    Every process differentiates its rows' summed loss, scaled by the global token count of the
    domain, so the all-reduced sum is the gradient of the domain's mean over the global batch. The
    target is the mean loss of a validation batch with one window per training domain, drawn from
    `target_domains` only when given. One pass over the domain rows and the target rows together
    gives every gradient and the losses. With gradient accumulation, or a model with a layer that
    per-group gradients do not support, each domain and the target take a pass of their own.
    """
    m = len(backend.domains)
    target_tokens = None if target_domains == TRAIN_TARGET else _draw_target(backend, target_domains)
    # The one pass keeps the activations of every row at once. With gradient accumulation, which
    # is set to bound that memory, each domain and the target take a pass of their own instead.
    if backend.group_gradients.supported and backend.accumulation == 1:
        rows, sums, counts = _one_pass(backend, tokens, domain_ids, global_counts, target_tokens)
    else:
        _log_fallback(backend)
        rows, sums, counts = _separate_passes(backend, tokens, domain_ids, global_counts, target_tokens)
    if backend.accelerator.num_processes > 1:
        # A single process skips the reduce, which would copy the whole matrix.
        rows = backend.accelerator.reduce(rows, reduction="sum")
        sums = backend.accelerator.reduce(sums, reduction="sum")
        counts = backend.accelerator.reduce(counts, reduction="sum")

    # Clipping scales row j by scale_j, so the clipped Gram matrix is scale_i * scale_j * <g_i, g_j>,
    # with no pass over the gradients to clip them.
    products = _gram(rows)
    norms = np.sqrt(np.diag(products)[:m])
    clip = float(backend.settings["grad_clip"])
    scale = np.minimum(clip / (norms + 1e-6), 1.0) if clip > 0 else np.ones(m)
    gram = products[:m, :m] * np.outer(scale, scale)
    alignment = None if target_tokens is None else products[:m, m] * scale
    return DomainGradients(rows[:m], scale, gram, alignment, sums.cpu().numpy(), counts.cpu().numpy())


def _gram(rows: torch.Tensor) -> np.ndarray:
    """Return the rows' inner products, computed in float32, as a float64 array."""
    if rows.device.type == "cpu":
        # NumPy's product of a matrix with its own transpose took 0.6 of torch's time on a CPU.
        array = rows.numpy()
        return (array @ array.T).astype(np.float64)
    return (rows @ rows.T).double().cpu().numpy()


def _draw_target(backend, target_domains: tuple[str, ...] | None) -> np.ndarray:
    """Draw the global target batch: one validation window per training domain, from the target domains."""
    m = len(backend.domains)
    if target_domains is None:
        weights = np.full(m, 1.0 / m)
    else:
        weights = np.array([1.0 if domain in target_domains else 0.0 for domain in backend.domains])
        weights /= weights.sum()
    tokens, _ = backend.target_sampler.sample(weights)
    return tokens


def _one_pass(backend, tokens, domain_ids, global_counts, target_tokens):
    """Compute the domain gradients, then the target's (when given), as the rows of one matrix,
    with one forward and backward pass over all rows."""
    m, device, context = len(backend.domains), backend.accelerator.device, backend.context
    # Sort the rows by domain, so that each domain's rows, and then the target's, are one block.
    order = np.argsort(domain_ids, kind="stable")
    rows_per_domain = np.bincount(domain_ids, minlength=m)
    blocks = [tokens[order]]
    scales = [1.0 / np.maximum(global_counts[domain_ids[order]], 1)]
    bounds = [0, *np.cumsum(rows_per_domain).tolist()]
    if target_tokens is not None:
        local, scale = _local_target(backend, target_tokens)
        blocks.append(local)
        scales.append(np.full(len(local), scale))
        bounds.append(bounds[-1] + len(local))

    gradients = backend.group_gradients.matrix(len(bounds) - 1, device)
    with backend.group_gradients.capture(bounds, gradients):
        token_losses = backend._token_losses(np.concatenate(blocks), model=backend.group_gradients.model)
        row_losses = token_losses.sum(dim=1)
        scale = torch.from_numpy(np.concatenate(scales)).to(device=device, dtype=row_losses.dtype)
        (row_losses * scale).sum().backward()

    domain_losses = row_losses.detach()[: bounds[m]].double()
    index = torch.from_numpy(domain_ids[order]).to(device)
    sums = torch.zeros(m, dtype=torch.float64, device=device).index_add_(0, index, domain_losses)
    counts = torch.from_numpy(rows_per_domain * context).to(device=device, dtype=torch.float64)
    return gradients, sums, counts


def _separate_passes(backend, tokens, domain_ids, global_counts, target_tokens):
    """Compute the same matrix as `_one_pass`, with a forward and backward pass per domain and one for the target."""
    parameters = _parameters(backend)
    m = len(backend.domains)
    device = backend.accelerator.device
    gradients = backend.group_gradients.matrix(m + (target_tokens is not None), device).zero_()
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
    if target_tokens is not None:
        local, scale = _local_target(backend, target_tokens)
        _flat_gradient(backend._token_losses(local).sum() * scale, parameters, out=gradients[m])
    return gradients, sums, counts


def _local_target(backend, target_tokens: np.ndarray) -> tuple[np.ndarray, float]:
    """Return this process's target rows and the factor that turns their summed loss into its
    share of the global target batch's mean loss."""
    processes, rank = backend.accelerator.num_processes, backend.accelerator.process_index
    return target_tokens[rank::processes], 1.0 / (target_tokens.shape[0] * backend.context)


def _log_fallback(backend) -> None:
    """Log once per backend why the domain gradients take separate passes."""
    if getattr(backend, "_fallback_logged", False):
        return
    backend._fallback_logged = True
    if backend.group_gradients.supported:
        reason = f"train.grad_accumulation={backend.accumulation} bounds the rows in one pass"
    else:
        reason = f"per-group gradients do not support {backend.group_gradients.unsupported}"
    log.info("domain gradients take one pass per domain and one for the target: %s", reason)


def apply_combined_gradient(backend, gradients: torch.Tensor, weights: np.ndarray) -> None:
    """Set each parameter's gradient to sum_j weights_j * g_j."""
    # One matrix-vector product, without an m x P temporary.
    combined = torch.from_numpy(weights).float().to(gradients.device) @ gradients
    offset = 0
    for parameter in _parameters(backend):
        count = parameter.numel()
        parameter.grad = combined[offset : offset + count].view_as(parameter).to(parameter.dtype)
        offset += count
