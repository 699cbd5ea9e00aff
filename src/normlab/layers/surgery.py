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
from collections.abc import Callable, Iterable, Mapping
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
from normlab.layers.sync import SyncBatchNorm

__all__ = [
    "FUSER_METHODS",
    "fold_batchnorm",
    "recalibrate_bn",
    "freeze_bn",
    "unfreeze_bn",
    "convert_norm",
    "has_own_forward",
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


# The forwards that compute plain batch norm in eval mode. A BN subclass with any other forward
# (e.g. a fused BatchNorm + activation layer) does more than BN, which folding or replacing it
# would silently drop. normlab's variants override `forward_train` only: plain BN in eval mode.
_BN_FORWARDS = (_BatchNorm.forward, BatchNormBase.forward, nn.SyncBatchNorm.forward,
                SyncBatchNorm.forward)  # fmt: skip


def has_own_forward(module: nn.Module) -> bool:
    """True for a batch norm whose class overrides forward with something beyond plain BN
    (a fused BN + activation, say): surgery refuses to fold or replace it."""
    return is_batchnorm(module) and type(module).forward not in _BN_FORWARDS


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


# --- folding --------------------------------------------------------------------------------


class _LeafTracer(torch.fx.Tracer):
    """Treats normlab's layers as leaves: their shape checks cannot run on fx proxies."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m).__module__.startswith("normlab.layers") or super().is_leaf_module(m, qualname)


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
        shift = shift * bn.weight.to(**f64)
    if bn.bias is not None:
        shift = shift + bn.bias.to(**f64)
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
    if has_own_forward(bn):
        return (
            f"{type(bn).__name__} overrides forward (more than batch norm, e.g. an activation), "
            f"which folding would drop"
        )
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
    A BN that cannot be folded (after a ReLU, without running statistics, a subclass whose own
    forward does more than BN such as a fused BN + activation...) stays, with a warning naming
    it and why.

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


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, Tensor) else value


def _default_forward(model: nn.Module, batch: Any, device: torch.device) -> None:
    """Run one batch as a training loop would: a tensor is the input, an (input, target, ...)
    tuple or list gives its first item, a mapping is passed as keyword arguments."""
    if isinstance(batch, Tensor):
        model(batch.to(device))
    elif isinstance(batch, (tuple, list)) and batch:
        model(_to(batch[0], device))
    elif isinstance(batch, Mapping):
        model(**{key: _to(value, device) for key, value in batch.items()})
    else:
        raise TypeError(
            f"recalibrate_bn expected batches that are tensors, (input, target) tuples or "
            f"dicts of keyword arguments, got {type(batch).__name__}; pass forward_fn="
            f"lambda model, batch: model(...) to say how the model takes this batch"
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
    model: nn.Module,
    batches: Iterable[Any],
    num_batches: int | None = None,
    forward_fn: Callable[[nn.Module, Any], Any] | None = None,
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
        batches: iterable of batches (e.g. a DataLoader): input tensors, (input, target, ...)
            tuples (the first item is the input) or dicts (passed as keyword arguments);
            tensors are moved to the BN layers' device.
        num_batches: use at most this many batches (default: all).
        forward_fn: `forward_fn(model, batch)` runs one batch however the model takes it
            (moving it to the device is then up to it); replaces the default above.

    Example:
        >>> recalibrate_bn(model, loader, num_batches=50)
        >>> recalibrate_bn(model, loader, forward_fn=lambda m, b: m(b["image"], b["mask"]))
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
            if forward_fn is not None:
                forward_fn(model, batch)
            else:
                _default_forward(model, batch, device)
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
                f"batch norm {name!r} saw {s.count} value per channel, expected >= 2; pass larger or more batches"
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
            for p in (m.weight, m.bias):
                if p is not None:
                    p.requires_grad_(False)
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
            for p in (m.weight, m.bias):
                if p is not None:
                    p.requires_grad_(True)
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

    Raises:
        TypeError: a BN subclass overrides forward (`has_own_forward`), e.g. a fused
            BN + activation; nothing is replaced then.

    Example:
        >>> model = convert_norm(model, to="group", num_groups=8)
    """
    if is_batchnorm(model):
        targets = [""]
    else:
        targets = [name for name, m in model.named_modules() if is_batchnorm(m)]
    refused = [name or "the model itself" for name in targets
               if has_own_forward(model.get_submodule(name))]  # fmt: skip
    if refused:
        kinds = sorted({type(model.get_submodule(n)).__name__ for n in targets if
                        has_own_forward(model.get_submodule(n))})  # fmt: skip
        raise TypeError(
            f"convert_norm cannot replace {', '.join(refused)} ({', '.join(kinds)}): a batch "
            f"norm subclass whose forward does more than batch norm (e.g. an activation), which "
            f"the new norm would silently drop. Expected plain torch or normlab batch norm "
            f"layers; replace these layers yourself (e.g. by nn.Sequential(new_norm, "
            f"activation)) before converting"
        )
    if is_batchnorm(model):
        return _replacement(model, to, kwargs)
    for name in targets:
        _set_module(model, name, _replacement(model.get_submodule(name), to, kwargs))
    return model
