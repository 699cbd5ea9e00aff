"""normlab.layers: batch normalization from first principles, its variants, and BN surgery.

Imports only torch. `BatchNorm1d/2d/3d` are drop-ins for torch's; `BatchNorm` takes any rank;
`create_norm(name, C)` builds every registered norm by name.
"""

from normlab.layers import functional
from normlab.layers.backends import BACKENDS
from normlab.layers.batchnorm import BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormBase
from normlab.layers.norms import GroupNorm, InstanceNorm, LayerNorm, RMSNorm
from normlab.layers.registry import create_norm, norm_kwargs, norm_names
from normlab.layers.variants import BatchRenorm, GhostBatchNorm

__all__ = [
    "BACKENDS",
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
    "create_norm",
    "functional",
    "norm_kwargs",
    "norm_names",
]
