"""Per-group gradients of one model from a single forward and backward pass.

The rows of a batch are independent windows, so the gradient of a group of rows depends on those
rows only. Every layer's weight gradient therefore splits into one piece per group: X_g^T G_g for
a linear layer, where X_g contains the layer's inputs at the group's tokens and G_g the gradients
at its outputs. During one pass over all rows, hooks keep each layer's input and, when the backward
pass reaches the layer's output, write every group's piece into that group's row of an
(groups, P) matrix. The parameters' own gradients are switched off for the pass, so the weight
gradients are computed once, split by group, instead of once per group in many small passes.

Supported layers: linear layers (torch's and transformers' GPT-2 `Conv1D`), embeddings, layer
norms and RMS norms, which cover the gpt2, llama and neox families. A model with a trainable
parameter in any other layer is not supported, and callers fall back to one pass per group.
"""

import contextlib

import torch
import torch.nn.functional as F
from transformers.pytorch_utils import Conv1D


def layer_kind(module: torch.nn.Module) -> str | None:
    """Name how a layer's per-group gradient is computed, or None when it is not supported."""
    if isinstance(module, torch.nn.Linear):
        return "linear"
    if isinstance(module, Conv1D):
        return "conv1d"
    if isinstance(module, torch.nn.Embedding):
        # torch gives a padding row no gradient, but the hooks would give it one.
        return "embedding" if module.padding_idx is None else None
    if isinstance(module, torch.nn.LayerNorm):
        return "layer_norm"
    # transformers' RMS norms (LlamaRMSNorm and its copies) scale x / rms(x) by a weight.
    if type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon"):
        return "rms_norm"
    return None


class GroupGradients:
    """Compute per-group gradients of `model` over `parameters`, laid out as one flat vector each.

    `parameters` fixes the layout: parameter k occupies the slice after parameters 0..k-1. A
    parameter shared by two layers (tied input and output embeddings) gets both contributions.
    """

    def __init__(self, model: torch.nn.Module, parameters: list[torch.nn.Parameter]):
        self.model = model
        self.parameters = parameters
        self.size = sum(parameter.numel() for parameter in parameters)
        offsets, start = {}, 0
        for parameter in parameters:
            offsets[id(parameter)] = start
            start += parameter.numel()
        self.offsets = offsets
        # How many layers contribute to each parameter: two for tied input and output embeddings.
        self.contributors = {key: 0 for key in offsets}
        self.layers, self.unsupported, covered = [], None, set()
        for name, module in model.named_modules():
            own = {key: value for key, value in module.named_parameters(recurse=False) if id(value) in offsets}
            if not own:
                continue
            kind = layer_kind(module)
            if kind is None:
                self.unsupported = f"{name or 'the model'} ({type(module).__name__})"
                break
            self.layers.append((module, kind, set(own)))
            covered.update(id(value) for value in own.values())
            for value in own.values():
                self.contributors[id(value)] += 1
        if self.unsupported is None and len(covered) < len(offsets):
            self.unsupported = "a parameter that belongs to no layer"

    @property
    def supported(self) -> bool:
        return self.unsupported is None

    def matrix(self, groups: int, device) -> torch.Tensor:
        """Return a (groups, P) fp32 matrix to capture into, reused from step to step.

        Zeroing a fresh matrix of this size each step took 13 ms of a 220 ms step of the tiny
        model on a CPU, mostly in page faults. Its contents last until the next call.
        """
        # A tensor's device carries an index ("cuda:0") where Accelerate's may not ("cuda").
        device = torch.empty(0, device=device).device
        buffer = getattr(self, "_buffer", None)
        if buffer is None or buffer.shape[0] < groups or buffer.device != device:
            # Drop the old matrix first, so that two never take memory at once.
            buffer = self._buffer = None
            buffer = self._buffer = torch.empty(groups, self.size, dtype=torch.float32, device=device)
        return buffer[:groups]

    @contextlib.contextmanager
    def capture(self, bounds: list[int], out: torch.Tensor):
        """Write each group's gradient into out[g] during a forward and backward pass over all rows
        inside the block. Group g is rows bounds[g] to bounds[g + 1] of the batch.
        """
        capture = Capture(self, bounds, out)
        handles, switched = [], [parameter for parameter in self.parameters if parameter.requires_grad]
        for parameter in switched:
            parameter.requires_grad_(False)
        try:
            for module, kind, names in self.layers:
                hook = _Hook(capture, kind, module, names)
                handles.append(module.register_forward_hook(hook.forward))
            yield capture
        finally:
            for handle in handles:
                handle.remove()
            for parameter in switched:
                parameter.requires_grad_(True)
        capture.finish()


class Capture:
    """The state of one capture: how many layers have yet to contribute to each parameter.

    Each parameter's block of `out` is overwritten by its first contribution instead of being
    zeroed first, which saved a few percent of a step on a CPU.
    """

    def __init__(self, owner: GroupGradients, bounds: list[int], out: torch.Tensor):
        self.owner, self.bounds, self.out = owner, bounds, out
        self.rows, self.groups = bounds[-1], len(bounds) - 1
        self.pending = dict(owner.contributors)
        self._indicator = None

    def indicator(self) -> torch.Tensor:
        """Return the (groups, rows) matrix with a 1 where a row of the batch is in a group."""
        if self._indicator is None:
            self._indicator = torch.zeros(self.groups, self.rows, device=self.out.device)
            for group, start, stop in self.spans(1):
                self._indicator[group, start:stop] = 1.0
        return self._indicator

    def spans(self, tokens_per_row: int):
        """Yield each group's index and its first and last-plus-one token in the flattened batch."""
        for group in range(self.groups):
            yield group, self.bounds[group] * tokens_per_row, self.bounds[group + 1] * tokens_per_row

    def block(self, parameter: torch.nn.Parameter, group: int) -> torch.Tensor:
        """Return group `group`'s gradient of `parameter`, a view into `out`."""
        start = self.owner.offsets[id(parameter)]
        return self.out[group, start : start + parameter.numel()].view(parameter.shape)

    def first_write(self, parameter: torch.nn.Parameter) -> bool:
        return self.pending[id(parameter)] == self.owner.contributors[id(parameter)]

    def written(self, parameter: torch.nn.Parameter) -> None:
        self.pending[id(parameter)] -= 1

    def finish(self) -> None:
        """Zero the gradients of parameters that no layer wrote (a layer the forward pass skipped)."""
        for parameter in self.owner.parameters:
            if self.first_write(parameter):
                start = self.owner.offsets[id(parameter)]
                self.out[:, start : start + parameter.numel()].zero_()


class _Hook:
    """One layer's hooks during a capture: keep its input, then split its weight gradient by group."""

    def __init__(self, capture: Capture, kind: str, module: torch.nn.Module, names: set):
        self.capture, self.kind, self.module, self.names = capture, kind, module, names

    def forward(self, module, inputs, output):
        features = inputs[0].detach()
        if self.kind == "embedding":
            # The weights take no gradient, so an embedding's output starts the backward graph.
            # GPT-2 looks up one row of positions for the whole batch; expand it to one per row
            # so that its gradient stays separate per row.
            rows = self.capture.rows
            if features.shape[0] != rows:
                features = features.expand(rows, *features.shape[1:])
                output = output.expand(rows, *output.shape[1:])
            output = output.detach().clone().requires_grad_(True)
        if output.requires_grad:
            output.register_hook(lambda gradient: self.backward(features, gradient))
        return output

    def backward(self, features: torch.Tensor, gradient: torch.Tensor) -> None:
        if gradient.dim() != 3 or gradient.shape[0] != self.capture.rows:
            raise RuntimeError(
                f"per-group gradients need a (rows, tokens, features) output from every layer; "
                f"{type(self.module).__name__} gave {tuple(gradient.shape)} for {self.capture.rows} rows."
            )
        tokens_per_row = gradient.shape[1]
        gradient = gradient.reshape(-1, gradient.shape[-1]).float()
        if self.kind == "embedding":
            features = features.reshape(-1)
        else:
            features = features.reshape(-1, features.shape[-1]).float()
            features = self.normalized(features) if self.kind.endswith("norm") else features
        if "bias" in self.names:
            self.add_sums(self.module.bias, gradient, tokens_per_row)
        if "weight" not in self.names:
            return
        if self.kind.endswith("norm"):
            self.add_sums(self.module.weight, gradient * features, tokens_per_row)
            return
        spans = list(self.capture.spans(tokens_per_row))
        weight = self.module.weight
        if self.kind == "linear":
            # torch's layout is (out, in): G_g^T X_g.
            self.add(weight, spans, lambda w, a, b, beta: w.addmm_(gradient[a:b].t(), features[a:b], beta=beta), True)
        elif self.kind == "conv1d":
            self.add(weight, spans, lambda w, a, b, beta: w.addmm_(features[a:b].t(), gradient[a:b], beta=beta), True)
        else:
            self.add(weight, spans, lambda w, a, b, beta: w.index_add_(0, features[a:b], gradient[a:b]))

    def normalized(self, features: torch.Tensor) -> torch.Tensor:
        """Recompute the norm's output before its weight (x-hat), whose product with G is the weight's gradient."""
        if self.kind == "layer_norm":
            # A unit weight and zero bias give the same x-hat; torch's kernel with them took 0.55
            # of the time without them on a CPU.
            shape = self.module.normalized_shape
            ones = torch.ones(shape, device=features.device)
            return F.layer_norm(features, shape, ones, torch.zeros_like(ones), eps=self.module.eps)
        return features * torch.rsqrt(features.pow(2).mean(-1, keepdim=True) + self.module.variance_epsilon)

    def add_sums(self, parameter, values: torch.Tensor, tokens_per_row: int) -> None:
        """Add the sum of each group's per-token `values` to its gradient of a vector parameter
        (a bias, or a norm's weight)."""
        # Summing each row's tokens and then the rows of each group took a fraction of the time
        # of one sum per group.
        row_sums = values.reshape(self.capture.rows, tokens_per_row, -1).sum(dim=1)
        sums = self.capture.indicator() @ row_sums
        start = self.capture.owner.offsets[id(parameter)]
        blocks = self.capture.out[:, start : start + parameter.numel()]
        if self.capture.first_write(parameter):
            blocks.copy_(sums)
        else:
            blocks.add_(sums)
        self.capture.written(parameter)

    def add(self, parameter, spans, add_group, overwrites: bool = False) -> None:
        """Add every group's contribution to its gradient of `parameter`.

        `add_group(block, start, stop, beta)` adds the contribution of tokens start to stop into
        the view `block`, scaled by beta first when it `overwrites` (beta 0 ignores the old contents).
        """
        first = self.capture.first_write(parameter)
        for group, start, stop in spans:
            block = self.capture.block(parameter, group)
            if first and overwrites and stop > start:
                add_group(block, start, stop, 0.0)
                continue
            if first:
                block.zero_()
            if stop > start:
                add_group(block, start, stop, 1.0)
        self.capture.written(parameter)
