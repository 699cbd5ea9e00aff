"""normlab.layers: batch normalization from first principles, its variants, and BN surgery.

Imports only torch. `BatchNorm1d/2d/3d` are drop-ins for torch's; `BatchNorm` takes any rank;
`create_norm(name, C)` builds every registered norm by name.
"""

from normlab._deprecated import moved_module
from normlab.layers import functional
from normlab.layers.batchnorm import BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormBase
from normlab.layers.implementations import IMPLS
from normlab.layers.norms import GroupNorm, InstanceNorm, LayerNorm, RMSNorm
from normlab.layers.registry import create_norm, norm_kwargs, norm_names, register_norm
from normlab.layers.surgery import (
    convert_norm,
    fold_batchnorm,
    freeze_bn,
    is_batchnorm,
    recalibrate_bn,
    unfreeze_bn,
)
from normlab.layers.sync import SyncBatchNorm, convert_sync_batchnorm, revert_sync_batchnorm
from normlab.layers.variants import BatchRenorm, GhostBatchNorm

__all__ = [
    "IMPLS",
    "BatchNorm",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "BatchNormBase",
    "BatchRenorm",
    "GhostBatchNorm",
    "GroupNorm",
    "InstanceNorm",
    "LayerNorm",
    "RMSNorm",
    "SyncBatchNorm",
    "convert_norm",
    "convert_sync_batchnorm",
    "create_norm",
    "fold_batchnorm",
    "freeze_bn",
    "functional",
    "is_batchnorm",
    "norm_kwargs",
    "norm_names",
    "recalibrate_bn",
    "register_norm",
    "revert_sync_batchnorm",
    "unfreeze_bn",
]

# the old name of IMPLS, with a DeprecationWarning
__getattr__ = moved_module(__name__, "normlab.layers.implementations", {"BACKENDS": "IMPLS"})
