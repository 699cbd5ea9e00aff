"""Deprecated module path: the batch norm implementations are in `normlab.layers.implementations`.

Each old name still resolves to its new one, with a DeprecationWarning.
"""

from normlab._deprecated import moved_module

__getattr__ = moved_module(
    __name__,
    "normlab.layers.implementations",
    {
        "BACKENDS": "IMPLS",
        "TRITON_MIN_BYTES": "TRITON_MIN_BYTES",
        "check_backend": "check_impl",
        "dispatch_batch_norm": "dispatch_batch_norm",
        "prefers_triton": "prefers_triton",
        "resolve_backend": "resolve_impl",
    },
)
