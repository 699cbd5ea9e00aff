"""Launchers: pick the layout view and tile config in Python, then run the Triton kernels.

Configs are chosen here, not with ``@triton.autotune``, because the interpreter (how CI tests the
kernels on CPU) cannot autotune, and because a fixed rule keeps results reproducible.
"""

import contextlib
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

from normlab.kernels import triton_bn as k


# Plain-Python helpers: in current Triton (3.9) triton.cdiv and next_power_of_2 are
# ConstexprFunction wrappers whose Python calls cost tens of us on this CPU; small layers feel
# that on every launch.
def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


@dataclass(frozen=True)
class View:
    """A tensor seen as strided ``[N, C, S]``; ``channels_last`` marks the ``[M, C]`` row view."""

    N: int
    C: int
    S: int
    sn: int
    sc: int
    ss: int
    channels_last: bool

    @property
    def count(self) -> int:
        """Elements per channel (the M of the statistics)."""
        return self.N * self.S


def make_dense(x: torch.Tensor) -> torch.Tensor:
    """Return x if NCHW-contiguous or channels-last-dense, else a contiguous copy."""
    if x.is_contiguous() or _is_channels_last_dense(x):
        return x
    return x.contiguous()


def _is_channels_last_dense(x: torch.Tensor) -> bool:
    # channels-last of any rank: moving dim 1 to the end gives a contiguous tensor.
    return x.dim() >= 3 and x.movedim(1, -1).is_contiguous()


def view_of(x: torch.Tensor) -> View:
    """The ``[N, C, S]`` view of a dense x (see ``make_dense``)."""
    N, C = x.shape[0], x.shape[1]
    S = x.numel() // max(N * C, 1) if x.dim() > 2 else 1
    if x.dim() == 2 or S == 1 or (not x.is_contiguous() and _is_channels_last_dense(x)):
        # Rows of C contiguous values: [M, C] with M = N*S, as N=1, S=M, strides (0, 1, C).
        return View(1, C, N * S, 0, 1, C, True)
    return View(N, C, S, C * S, S, 1, False)


@dataclass(frozen=True)
class Knobs:
    """Tuning knobs of one view kind (see ``KNOBS``); the GPU launch plan follows from them.

    The interpreter (CPU tests) scales the sizes down (256-element tiles, 4 programs, 2 partial
    rows per finalize load) but keeps the knobs that change code paths: the unrolls, the
    pipelined loops and ``finalize_channels``.
    """

    programs_per_sm: int  # programs per SM along the reduction (the split)
    tile_elems: int  # elements of a [BLOCK_C, BLOCK_S] tile (power of two)
    stats_unroll: int = 1  # tiles loaded per loop step by the statistics kernel (1 or 2)
    stats_stages: int = 0  # its loop's software-pipeline stages (0 = plain loop; or 2-4)
    bwd_unroll: int = 1  # units loaded per loop step by the backward reduce kernel (1 or 2)
    bwd_stages: int = 0  # its loop's software-pipeline stages (0 = plain loop; or 2-4)
    finalize_channels: int = 32  # channels per finalize program (power of two)
    finalize_rows: int = 64  # partial-sum rows per finalize load, BLOCK_P (power of two)
    rows_cap: int = 0  # rows view: at most this many rows per tile (power of two; 0 = no cap)

    def __post_init__(self):
        for name in ("tile_elems", "finalize_channels", "finalize_rows", "rows_cap"):
            value = getattr(self, name)
            if (value < 1 or value & (value - 1)) and not (name == "rows_cap" and value == 0):
                zero = " (or 0: no cap)" if name == "rows_cap" else ""
                raise ValueError(
                    f"Knobs.{name} must be a power of two{zero} (Triton block "
                    f"sizes), got {value}; use e.g. {_next_pow2(max(value, 1))}"
                )
        for name, allowed in (
            ("stats_unroll", (1, 2)),
            ("bwd_unroll", (1, 2)),
            ("stats_stages", (0, 2, 3, 4)),
            ("bwd_stages", (0, 2, 3, 4)),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"Knobs.{name} must be one of {allowed}, got {getattr(self, name)}")
        if self.programs_per_sm < 1:
            raise ValueError(f"Knobs.programs_per_sm must be >= 1, got {self.programs_per_sm}")


# The adopted knobs per view kind: "planes" = NCHW; "rows" / "rows16" = channels-last or (N, C)
# with 4-byte / 2-byte elements. Rows tiles end in a cross-warp reduction over rows, so they
# want fewer, longer-running programs (2 per SM) than NCHW (8 per SM); 2-byte rows run best with
# 4096-element tiles. The H100 measurements behind these values, and the candidate changes the
# kernel benchmark times against them (normlab.bench.kernels.tuning), are in
# benchmarks/README.md.
KNOBS = {
    "planes": Knobs(programs_per_sm=8, tile_elems=4096),
    "rows": Knobs(programs_per_sm=2, tile_elems=8192),
    "rows16": Knobs(programs_per_sm=2, tile_elems=4096),
}


@contextlib.contextmanager
def using_knobs(knobs: Mapping[str, Knobs]) -> Iterator[None]:
    """Launch with ``knobs`` (one ``Knobs`` per ``KNOBS`` key) instead of ``KNOBS`` inside the block.

    How a benchmark times a candidate configuration through the public op. Process-wide, not a
    context variable, because autograd runs a GPU backward on its own thread; not for use from
    several threads at once. The adopted knobs come back when the block ends, raised or not.

    Example:
        >>> fast = {**KNOBS, "rows": dataclasses.replace(KNOBS["rows"], stats_unroll=2)}
        >>> with using_knobs(fast):
        ...     y = normlab.kernels.batch_norm(x, None, None, training=True)
    """
    global KNOBS
    if set(knobs) != set(KNOBS) or not all(isinstance(v, Knobs) for v in knobs.values()):
        raise ValueError(
            f"using_knobs expected one Knobs per view kind {sorted(KNOBS)}, got "
            f"{ {k: type(v).__name__ for k, v in knobs.items()} }; start from KNOBS, e.g. "
            "{**KNOBS, 'rows': dataclasses.replace(KNOBS['rows'], ...)}"
        )
    adopted, KNOBS = KNOBS, dict(knobs)
    try:
        yield
    finally:
        KNOBS = adopted


@dataclass(frozen=True)
class Tiles:
    """A launch plan: ``[block_c, block_s]`` tiles; grid ``(cdiv(C, block_c), split)``; program
    ``p`` of a channel block handles units ``[p * units_per_prog, (p + 1) * units_per_prog)`` of
    the ``n_units = N * n_sblocks`` tiles (the last program's tail is masked). The finalize
    kernels run ``cdiv(C, fin_block)`` programs loading ``[fin_rows, fin_block]`` partials."""

    block_c: int
    block_s: int
    split: int  # programs along the reduction
    units_per_prog: int
    n_sblocks: int
    n_units: int
    num_warps: int
    num_stages: int  # launch option (for these loops it changes nothing: see triton_bn)
    stats_unroll: int = 1
    stats_stages: int | None = None  # tl.range num_stages of the statistics loop; None: plain
    bwd_unroll: int = 1
    bwd_stages: int | None = None  # same for the backward reduce loop
    fin_block: int = 32
    fin_rows: int = 64


def view_kind(v: View, elem_size: int) -> str:
    """The ``KNOBS`` key of a view: "planes", "rows" or "rows16"."""
    return "planes" if not v.channels_last else ("rows16" if elem_size == 2 else "rows")


@functools.cache
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def choose_tiles(v: View, elem_size: int, device: torch.device) -> Tiles:
    """Tile ``[BLOCK_C, BLOCK_S]`` of about ``tile_elems`` elements, shaped by layout.

    Rows view (channels-last, (N, C)): up to 128 contiguous channels x as many rows as fit.
    NCHW: a power of two covering H*W (capped at the tile), then as many channels as fit, so
    small H*W (7x7) gets [channels, 64] tiles looping over the batch.
    """
    sms = _sm_count(device) if device.type == "cuda" else 0
    return plan_tiles(v, elem_size, sms, KNOBS[view_kind(v, elem_size)])


@functools.lru_cache(maxsize=512)  # launch overhead matters for small layers: plan once
def plan_tiles(v: View, elem_size: int, sms: int, knobs: Knobs) -> Tiles:
    """The launch plan for ``sms`` SMs (0 = Triton's interpreter) and one kind's knobs."""
    # sms == 0: the interpreter runs programs one after another; few programs and small tiles
    # are fastest there, and still exercise channel masks and the split tails.
    tile = knobs.tile_elems if sms else 256
    if v.channels_last:
        block_c = min(_next_pow2(v.C), 128)
        block_s = max(tile // block_c, 1)
        if knobs.rows_cap:
            block_s = min(block_s, knobs.rows_cap)
    else:
        block_s = min(_next_pow2(v.S), tile)
        block_c = min(max(tile // block_s, 1), _next_pow2(v.C))
    n_sblocks = _cdiv(v.S, block_s)
    n_units = v.N * n_sblocks
    n_cblocks = _cdiv(v.C, block_c)
    target = knobs.programs_per_sm * sms if sms else 4
    split = max(1, min(n_units, _cdiv(target, n_cblocks)))
    units_per_prog = _cdiv(n_units, split)
    split = _cdiv(n_units, units_per_prog)  # drop empty programs
    num_warps = 8 if block_c * block_s >= 2048 else 4
    num_stages = 3 if elem_size == 2 else 2
    return Tiles(
        block_c,
        block_s,
        split,
        units_per_prog,
        n_sblocks,
        n_units,
        num_warps,
        num_stages,
        stats_unroll=knobs.stats_unroll,
        stats_stages=knobs.stats_stages or None,
        bwd_unroll=knobs.bwd_unroll,
        bwd_stages=knobs.bwd_stages or None,
        fin_block=knobs.finalize_channels,
        # 2 rows per load in the interpreter: its few partial rows still take several steps.
        fin_rows=knobs.finalize_rows if sms else 2,
    )


def _grid(v: View, t: Tiles) -> tuple[int, int]:
    return (_cdiv(v.C, t.block_c), t.split)


def _common(v: View, t: Tiles) -> tuple:
    return (v.C, v.S, v.sn, v.sc, v.ss, t.n_sblocks, t.n_units, t.units_per_prog)


def _fin_grid(v: View, t: Tiles) -> tuple[int]:
    return (_cdiv(v.C, t.fin_block),)


def forward(x, running_mean, running_var, weight, bias, training, momentum, eps, relu):
    """y, stats ([4, C] float32: mean, invstd, a, b) for a dense x."""
    v = view_of(x)
    t = choose_tiles(v, x.element_size(), x.device)
    stats = torch.empty(4, v.C, device=x.device, dtype=torch.float32)
    y = torch.empty_like(x)  # keeps x's strides (x is dense)
    dummy = stats  # stands in for absent pointers; never read (HAS_* flags are False)
    w = weight if weight is not None else dummy
    b = bias if bias is not None else dummy
    if training:
        part = torch.empty(2, t.split, v.C, device=x.device, dtype=torch.float32)
        k._stats_kernel[_grid(v, t)](
            x,
            part,
            *_common(v, t),
            t.split,
            BLOCK_C=t.block_c,
            BLOCK_S=t.block_s,
            UNROLL=t.stats_unroll,
            STAGES=t.stats_stages,
            num_warps=t.num_warps,
            num_stages=t.num_stages,
        )
        update = running_mean is not None
        M = v.count
        k._finalize_kernel[_fin_grid(v, t)](
            x,
            part,
            w,
            b,
            running_mean if update else dummy,
            running_var if update else dummy,
            stats,
            v.C,
            v.sc,
            t.split,
            float(M),
            float(momentum),
            float(eps),
            M / max(M - 1, 1),
            HAS_W=weight is not None,
            HAS_B=bias is not None,
            UPDATE_RUNNING=update,
            BLOCK=t.fin_block,
            BLOCK_P=t.fin_rows,
        )
    else:
        k._eval_coef_kernel[_fin_grid(v, t)](
            running_mean,
            running_var,
            w,
            b,
            stats,
            v.C,
            float(eps),
            HAS_W=weight is not None,
            HAS_B=bias is not None,
            BLOCK=t.fin_block,
        )
    k._apply_kernel[_grid(v, t)](
        x,
        y,
        stats,
        *_common(v, t),
        RELU=relu,
        BLOCK_C=t.block_c,
        BLOCK_S=t.block_s,
        num_warps=t.num_warps,
        num_stages=t.num_stages,
    )
    return y, stats


def backward(dy, x, stats, weight, training, relu):
    """dx, dweight, dbias (float32 [C]) for a dense x; dy is given x's strides first."""
    if dy.stride() != x.stride():
        dy = torch.empty_like(x).copy_(dy)
    v = view_of(x)
    t = choose_tiles(v, x.element_size(), x.device)
    part = torch.empty(2, t.split, v.C, device=x.device, dtype=torch.float32)
    coef = torch.empty(3, v.C, device=x.device, dtype=torch.float32)
    dw = torch.empty(v.C, device=x.device, dtype=torch.float32)
    db = torch.empty(v.C, device=x.device, dtype=torch.float32)
    dx = torch.empty_like(x)
    k._bwd_reduce_kernel[_grid(v, t)](
        x,
        dy,
        stats,
        part,
        *_common(v, t),
        t.split,
        RELU=relu,
        BLOCK_C=t.block_c,
        BLOCK_S=t.block_s,
        UNROLL=t.bwd_unroll,
        STAGES=t.bwd_stages,
        num_warps=t.num_warps,
        num_stages=t.num_stages,
    )
    k._bwd_finalize_kernel[_fin_grid(v, t)](
        part,
        stats,
        weight if weight is not None else stats,
        dw,
        db,
        coef,
        v.C,
        t.split,
        float(v.count),
        HAS_W=weight is not None,
        TRAINING=training,
        BLOCK=t.fin_block,
        BLOCK_P=t.fin_rows,
    )
    k._bwd_apply_kernel[_grid(v, t)](
        x,
        dy,
        dx,
        stats,
        coef,
        *_common(v, t),
        RELU=relu,
        BLOCK_C=t.block_c,
        BLOCK_S=t.block_s,
        num_warps=t.num_warps,
        num_stages=t.num_stages,
    )
    return dx, dw, db
