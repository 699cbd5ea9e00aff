"""Surgery around batch norm: fold it away, recalibrate it, freeze it, replace it.

Every function accepts torch's BN layers (`torch.nn.BatchNorm*d`, `SyncBatchNorm`) and
normlab's (`BatchNormBase` and its subclasses) alike.

- `fold_batchnorm(model)`: an eval-mode copy with each BN that directly follows a Linear/Conv
  folded into that layer (inference speed-up, same outputs).
- `recalibrate_bn(model, batches)`: running statistics recomputed as the exact population
  statistics over some batches (PreciseBN), instead of an exponential average.
- `freeze_bn(model)` / `unfreeze_bn(model)`: BN normalizes with its running statistics and stops
  updating them, whatever `model.train()` says.
- `convert_norm(model, to="group")`: every BN replaced by another registered norm.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import Any

import torch
import torch.fx
from torch import Tensor, nn
from torch.ao.quantization.fuser_method_mappings import (
    fuse_conv_bn,
    fuse_conv_bn_relu,
    fuse_convtranspose_bn,
    fuse_linear_bn,
)
from torch.nn.modules.batchnorm import _BatchNorm

from normlab.layers import functional
from normlab.layers.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormBase
from normlab.layers.registry import create_norm

__all__ = [
    "FUSER_METHODS",
    "fold_batchnorm",
    "recalibrate_bn",
    "freeze_bn",
    "unfreeze_bn",
    "convert_norm",
    "is_batchnorm",
]

_FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

# torch.ao.quantization.fuse_modules looks fusers up by exact module types, so any subclass of
# torch's BatchNorm*d (ours included) needs them named: fuse_modules(model, names,
# fuse_custom_config_dict={"additional_fuser_method_mapping": FUSER_METHODS}) fuses normlab's
# BatchNorm1d/2d/3d as torch's.
FUSER_METHODS = {
    **{(conv, bn): fuse_conv_bn for conv, bn in
       [(nn.Conv1d, BatchNorm1d), (nn.Conv2d, BatchNorm2d), (nn.Conv3d, BatchNorm3d)]},
    **{(conv, bn, nn.ReLU): fuse_conv_bn_relu for conv, bn in
       [(nn.Conv1d, BatchNorm1d), (nn.Conv2d, BatchNorm2d), (nn.Conv3d, BatchNorm3d)]},
    **{(conv, bn): fuse_convtranspose_bn for conv, bn in
       [(nn.ConvTranspose1d, BatchNorm1d), (nn.ConvTranspose2d, BatchNorm2d),
        (nn.ConvTranspose3d, BatchNorm3d)]},
    (nn.Linear, BatchNorm1d): fuse_linear_bn,
}  # fmt: skip


def is_batchnorm(module: nn.Module) -> bool:
    """True for torch's and normlab's batch norm layers (variants and sync included)."""
    return isinstance(module, (_BatchNorm, BatchNormBase))


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


# --- folding --------------------------------------------------------------------------------


class _LeafTracer(torch.fx.Tracer):
    """Treats normlab's layers as leaves: their shape checks cannot run on fx proxies."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m).__module__.startswith("normlab.layers") or super().is_leaf_module(
            m, qualname
        )


def _pairs_by_tracing(model: nn.Module) -> list[tuple[str, str]]:
    """(layer, bn) module names where the BN's only input is the layer's output, used nowhere
    else, and both modules are called exactly once (so changing the layer changes nothing else)."""
    graph = _LeafTracer().trace(model)
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not is_batchnorm(model.get_submodule(node.target)):
            continue
        source = node.args[0] if node.args else None
        if (
            isinstance(source, torch.fx.Node)
            and source.op == "call_module"
            and isinstance(model.get_submodule(source.target), _FOLDABLE)
            and len(source.users) == 1
            and calls[source.target] == 1
            and calls[node.target] == 1
        ):
            pairs.append((source.target, node.target))
    return pairs


def _pairs_in_sequentials(model: nn.Module) -> list[tuple[str, str]]:
    """(layer, bn) names of consecutive children of every nn.Sequential (no tracing needed)."""
    pairs = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (a_name, a), (b_name, b) in zip(children, children[1:]):
            if isinstance(a, _FOLDABLE) and is_batchnorm(b):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + a_name, prefix + b_name))
    return pairs


@torch.no_grad()
def _fold_pair(layer: nn.Module, bn: nn.Module) -> None:
    """layer <- bn(layer(.)) in eval mode: W' = W * s, b' = (b - mean) * s + beta, per channel,
    with s = gamma / sqrt(running_var + eps); computed in float64, stored in layer's dtype."""
    weight = layer.weight  # (C_out, ...) for Linear and Conv
    f64 = dict(dtype=torch.float64, device=weight.device)
    scale = torch.rsqrt(bn.running_var.to(**f64) + bn.eps)  # (C,)
    shift = -bn.running_mean.to(**f64) * scale
    if bn.weight is not None:
        scale = scale * bn.weight.to(**f64)
        shift = shift * bn.weight.to(**f64) + bn.bias.to(**f64)
    bias = layer.bias.to(**f64) if layer.bias is not None else torch.zeros_like(scale)
    new_weight = weight.to(**f64) * scale.view(-1, *[1] * (weight.dim() - 1))
    layer.weight.copy_(new_weight.to(weight.dtype))
    new_bias = (bias * scale + shift).to(weight.dtype)
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias)
    else:
        layer.bias.copy_(new_bias)


def _can_fold(layer: nn.Module, bn: nn.Module) -> str | None:
    """None if foldable, else the reason why not."""
    channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if bn.running_mean is None:
        return "it has no running statistics (track_running_stats=False)"
    if bn.num_features != channels:
        return f"it has {bn.num_features} channels but the layer before outputs {channels}"
    return None


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of `model` with BN folded into the Linear/Conv before it.

    Every BN whose input is the output of a `Linear` or `Conv1d/2d/3d` (and nothing else uses
    that output) is folded into that layer's weight and bias and replaced by `nn.Identity`;
    the copy's eval outputs equal the original's eval outputs (to float rounding). The model's
    class and structure are kept. Pairs are found with torch.fx; if the model cannot be traced,
    consecutive (layer, BN) children of `nn.Sequential` containers are folded instead.
    A BN that cannot be folded (after a ReLU, without running statistics...) stays, with a
    warning naming it.

    Raises:
        ValueError: the model has BN layers but none could be folded (the message says why).

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).eval()
        >>> folded = fold_batchnorm(model)
        >>> isinstance(folded[1], nn.Identity)
        True
    """
    folded_model = copy.deepcopy(model).eval()
    bn_names = [name for name, m in folded_model.named_modules() if is_batchnorm(m)]
    if not bn_names:
        return folded_model
    try:
        pairs, how = _pairs_by_tracing(folded_model), "torch.fx"
    except Exception as err:  # fx raises many types (TraceError, TypeError, ...) on dynamic code
        pairs, how = _pairs_in_sequentials(folded_model), f"nn.Sequential (fx failed: {err})"
    folded, skipped = set(), {}
    for layer_name, bn_name in pairs:
        layer, bn = folded_model.get_submodule(layer_name), folded_model.get_submodule(bn_name)
        reason = _can_fold(layer, bn)
        if reason:
            skipped[bn_name] = reason
            continue
        _fold_pair(layer, bn)
        _set_module(folded_model, bn_name, nn.Identity())
        folded.add(bn_name)
    left = [name for name in bn_names if name not in folded]
    if not folded:
        details = "; ".join(f"{n}: {r}" for n, r in skipped.items()) or (
            "none directly follows a Linear/Conv1d/2d/3d whose output feeds only that BN"
        )
        raise ValueError(
            f"cannot fold any of the {len(bn_names)} batch norm layer(s) of this model "
            f"(searched with {how}): {details}. Place each BN right after a Linear/Conv "
            f"(e.g. in an nn.Sequential) to fold it"
        )
    if left:
        warnings.warn(
            f"fold_batchnorm left {len(left)} batch norm layer(s) unfolded (not directly after a "
            f"Linear/Conv, or {'; '.join(f'{n}: {r}' for n, r in skipped.items()) or 'shared'}): "
            f"{', '.join(left)}",
            stacklevel=2,
        )
    return folded_model


# --- recalibration --------------------------------------------------------------------------


def _first_tensor(batch: Any) -> Tensor:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise TypeError(
        f"recalibrate_bn expected batches of tensors or (input, target) tuples, got "
        f"{type(batch).__name__}; pass e.g. a DataLoader or a list of input tensors"
    )


class _PopulationStats:
    """Merges per-batch (count, mean, M2) per channel (Chan et al.): exact, no E[x^2]-E[x]^2."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, None, None

    def __call__(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        x = inputs[0].detach().to(torch.float64)
        n = x.numel() // x.shape[1]
        var, mean = torch.var_mean(x, dim=functional.reduce_dims(x), correction=0)  # (C,), (C,)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, var * n
            return
        total = self.count + n
        delta = mean - self.mean
        self.m2 = self.m2 + var * n + delta**2 * self.count * n / total
        self.mean = self.mean + delta * n / total
        self.count = total


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, batches: Iterable[Any], num_batches: int | None = None
) -> nn.Module:
    """Recompute every BN's running statistics as the population statistics of `batches`.

    PreciseBN (Wu & Johnson 2021): the exponential average of training is a noisy, stale
    estimate (its early batches saw other weights); here each BN's running_mean and running_var
    become the exact mean and unbiased variance of its input over all given batches. The batches
    run with BN layers in training mode (normalizing with batch statistics, as in training) and
    every other module in eval mode (no dropout), without gradients. Train/eval modes and
    `num_batches_tracked` are restored. Modifies `model` in place and returns it.
    (GhostBatchNorm gets the population variance too, not its average within-ghost-batch one.)

    Args:
        model: any module containing BN layers with running statistics.
        batches: iterable of input tensors or (input, target, ...) tuples (e.g. a DataLoader).
        num_batches: use at most this many batches (default: all).

    Example:
        >>> recalibrate_bn(model, [x for x, _ in loader], num_batches=50)
    """
    bns = {n: m for n, m in model.named_modules() if is_batchnorm(m) and m.running_mean is not None}
    if not bns:
        return model
    modes = {m: m.training for m in model.modules()}
    tracked = {m: m.num_batches_tracked.clone() for m in bns.values()}
    stats = {m: _PopulationStats() for m in bns.values()}
    hooks = [m.register_forward_pre_hook(stats[m]) for m in bns.values()]
    device = next(iter(bns.values())).running_mean.device
    used = 0
    try:
        model.eval()
        for m in bns.values():
            m.train()
        for batch in batches:
            if num_batches is not None and used >= num_batches:
                break
            model(_first_tensor(batch).to(device))
            used += 1
    finally:
        for hook in hooks:
            hook.remove()
        for module, mode in modes.items():
            module.train(mode)
    if used == 0:
        raise ValueError("recalibrate_bn got no batches; pass at least one input batch")
    for name, m in bns.items():
        s = stats[m]
        if s.mean is None:
            raise ValueError(
                f"batch norm {name!r} was not called by the model's forward on any of the "
                f"{used} batch(es); pass inputs whose forward reaches it"
            )
        if s.count < 2:
            raise ValueError(
                f"batch norm {name!r} saw {s.count} value per channel, expected >= 2; pass "
                f"larger or more batches"
            )
        m.running_mean.copy_(s.mean)
        m.running_var.copy_(s.m2 / (s.count - 1))
        m.num_batches_tracked.copy_(tracked[m])
    return model


# --- freezing -------------------------------------------------------------------------------


def _force_eval(module: nn.Module, inputs: Any) -> None:
    module.training = False  # torch's BN reads self.training in forward


def freeze_bn(model: nn.Module, freeze_affine: bool = False) -> nn.Module:
    """Make every BN normalize with its running statistics and stop updating them.

    A real mode that survives `model.train()`: normlab layers switch to their frozen mode;
    torch's layers get a forward pre-hook that puts them in eval mode before each call.
    With `freeze_affine=True`, gamma and beta stop learning too (requires_grad=False).
    Modifies `model` in place and returns it; `unfreeze_bn` undoes it.

    Raises:
        ValueError: a BN has no running statistics (track_running_stats=False).
    """
    for name, m in model.named_modules():
        if not is_batchnorm(m):
            continue
        if m.running_mean is None:
            raise ValueError(
                f"cannot freeze batch norm {name!r}: it was built with track_running_stats="
                f"False, so it has no running statistics to normalize with"
            )
        if isinstance(m, BatchNormBase):
            m.freeze()
        elif getattr(m, "_normlab_freeze_hook", None) is None:
            m._normlab_freeze_hook = m.register_forward_pre_hook(_force_eval)
            m.training = False
        if freeze_affine and m.weight is not None:
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)
            m._normlab_affine_frozen = True
    return model


def unfreeze_bn(model: nn.Module) -> nn.Module:
    """Undo `freeze_bn`: BN layers follow `model.train()`/`eval()` again (mode set to model's)."""
    for m in model.modules():
        if not is_batchnorm(m):
            continue
        if isinstance(m, BatchNormBase):
            m.unfreeze()
        hook = getattr(m, "_normlab_freeze_hook", None)
        if hook is not None:
            hook.remove()
            m._normlab_freeze_hook = None
            m.training = model.training
        if getattr(m, "_normlab_affine_frozen", False):
            m.weight.requires_grad_(True)
            m.bias.requires_grad_(True)
            m._normlab_affine_frozen = False
    return model


# --- conversion -----------------------------------------------------------------------------


@torch.no_grad()
def _replacement(bn: nn.Module, to: str, kwargs: dict[str, Any]) -> nn.Module:
    new = create_norm(to, bn.num_features, **kwargs)
    tensor = bn.weight if bn.weight is not None else bn.running_mean
    if tensor is not None:
        new = new.to(device=tensor.device, dtype=tensor.dtype)
    if isinstance(new, BatchNormBase) and new.track_running_stats and bn.running_mean is not None:
        new.running_mean.copy_(bn.running_mean)
        new.running_var.copy_(bn.running_var)
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    for name in ("weight", "bias"):
        old_p, new_p = getattr(bn, name, None), getattr(new, name, None)
        if isinstance(old_p, nn.Parameter) and isinstance(new_p, nn.Parameter):
            if old_p.shape == new_p.shape:
                new_p.copy_(old_p)
    new.train(bn.training)
    return new


def convert_norm(model: nn.Module, to: str = "group", **kwargs: Any) -> nn.Module:
    """Replace every BN (torch's or normlab's) with `create_norm(to, C, **kwargs)`.

    gamma and beta are copied where the new norm has parameters of the same shape (RMSNorm has
    no beta); running statistics are copied when the new norm is a normlab batch norm. The new
    modules take the BN's device, dtype and train/eval mode. Modifies `model` in place and
    returns it (or the replacement, if `model` itself is a BN).

    Example:
        >>> model = convert_norm(model, to="group", num_groups=8)
    """
    if is_batchnorm(model):
        return _replacement(model, to, kwargs)
    targets = [name for name, m in model.named_modules() if is_batchnorm(m)]
    for name in targets:
        _set_module(model, name, _replacement(model.get_submodule(name), to, kwargs))
    return model
