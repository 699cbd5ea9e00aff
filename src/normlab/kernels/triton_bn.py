"""Triton kernels for BatchNorm: statistics -> finalize -> apply, and the same for backward.

Every kernel sees the input as a strided 3-D view ``[N, C, S]`` (batch, channel, spatial):

- NCHW-contiguous ``(N, C, *spatial)``: strides ``(C*S, S, 1)``.
- channels-last / ``(N, C)``: the tensor is a row-major ``[M, C]`` matrix (``M = N*H*W``), viewed
  as ``N=1, S=M`` with strides ``(0, 1, C)``.

One program owns ``BLOCK_C`` channels and a contiguous range of "units"; a unit is one
``[BLOCK_C, BLOCK_S]`` tile at batch index ``n`` and spatial block ``sb``. Programs write
float32 partial sums ``[SPLIT, C]`` that a one-program-per-channel-block finalize kernel adds in a
fixed order, so results are deterministic (no float atomics). For more bytes in flight, the two
reduction kernels can load two units per loop step (``UNROLL=2``) or software-pipeline their
loop (``STAGES``): ``launch.Knobs`` settings, off by default.

Statistics use shifted sums: with ``K[c]`` one sample of channel ``c``,
``S1 = sum(x - K)``, ``S2 = sum((x - K)^2)``, ``mean = K + S1/M``, ``var = S2/M - (S1/M)^2``,
which stays accurate when ``|mean| >> std`` and lets partials from different programs simply add.

Backward: ``sum(dy)`` and ``sum(dy * (x - mean))`` per channel, then
``dx = k1*dy + k2*(x - mean) + k3`` with per-channel ``k`` (see ``_bwd_finalize_kernel``). A fused
ReLU's mask is recomputed from x (``a*x + b > 0``) so it costs no extra traffic.

This module imports triton; import it only after ``triton_available()`` said yes.
"""

import triton
import triton.language as tl


@triton.jit
def _program_tile(C, sc, ss, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """The prologue every streaming kernel shares: this program's channels and tile offsets.

    Returns ``c`` (channel ids, ``[BLOCK_C]``), ``c_mask`` (``c < C``), ``j_range``
    (``[BLOCK_S]``), ``tile_off`` (``[BLOCK_C, BLOCK_S]`` int32 offsets inside a tile) and
    ``c_base``: the int64 offset of the program's first channel, to add to every tensor pointer.
    """
    pid_c = tl.program_id(0)
    c_local = tl.arange(0, BLOCK_C)
    c = pid_c * BLOCK_C + c_local
    c_mask = c < C
    j_range = tl.arange(0, BLOCK_S)
    tile_off = c_local[:, None] * sc + j_range[None, :] * ss
    c_base = (pid_c * BLOCK_C).to(tl.int64) * sc
    return c, c_mask, j_range, tile_off, c_base


@triton.jit
def _unit_tile(u, u_end, n_sblocks, sn, ss, S, c_mask, j_range, BLOCK_S: tl.constexpr):
    """Offset of unit ``u``'s tile (int64 scalar) and its ``[BLOCK_C, BLOCK_S]`` mask.

    A unit at or past ``u_end`` (the end of this program's range, or of all units) is fully
    masked. Keeping the large part of the offset scalar lets the per-element offsets stay int32
    and loop-invariant.
    """
    n = u // n_sblocks
    sb = u - n * n_sblocks
    base = n.to(tl.int64) * sn + (sb * BLOCK_S).to(tl.int64) * ss
    s_valid = tl.where(u < u_end, S - sb * BLOCK_S, 0)
    return base, c_mask[:, None] & (j_range < s_valid)[None, :]


@triton.jit
def _unit_range(pid_s, units_per_prog, n_units, UNROLL: tl.constexpr):
    """This program's first unit and the end ``_unit_tile`` masks at: all units' end, or with
    ``UNROLL=2`` this program's, since a step's second unit may be the next program's."""
    u0 = pid_s * units_per_prog
    u_end = n_units
    if UNROLL == 2:
        u_end = tl.minimum(u0 + units_per_prog, n_units)
    return u0, u_end


@triton.jit
def _load_tile(ptr, base, tile_off, mask):
    """One tile as float32 (masked lanes 0)."""
    return tl.load(ptr + base + tile_off, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _stats_kernel(
    x_ptr,
    part_ptr,  # x: [N, C, S] strided; part: [2, SPLIT, C] float32
    C,
    S,
    sn,
    sc,
    ss,
    n_sblocks,
    n_units,
    units_per_prog,
    SPLIT,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
    UNROLL: tl.constexpr,
    STAGES: tl.constexpr,
):
    """Shifted sums per channel, with two knobs for more bytes in flight (``launch.Knobs``):

    - ``UNROLL=2`` loads two independent tiles per loop step into the same accumulators (a
      second accumulator pair would only add registers; the loads are what must be in flight).
    - ``STAGES`` (None or >= 2) software-pipelines the loop's loads through shared memory
      (``tl.range(num_stages=...)``; about ``(STAGES - 1) * UNROLL`` tiles of it). The launch
      option ``num_stages`` does not: for this loop it compiles to the same binary as None.
    """
    c, c_mask, j_range, tile_off, c_base = _program_tile(C, sc, ss, BLOCK_C, BLOCK_S)
    pid_s = tl.program_id(1)
    x_ptr += c_base
    # Shift: the channel's first element (n=0, s=0), [BLOCK_C, 1].
    k = tl.load(x_ptr + tl.arange(0, BLOCK_C) * sc, mask=c_mask, other=0.0).to(tl.float32)[:, None]
    acc1 = tl.zeros((BLOCK_C, BLOCK_S), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_C, BLOCK_S), dtype=tl.float32)
    u0, u_end = _unit_range(pid_s, units_per_prog, n_units, UNROLL)
    for i in tl.range(0, units_per_prog, UNROLL, num_stages=STAGES):
        base, mask = _unit_tile(u0 + i, u_end, n_sblocks, sn, ss, S, c_mask, j_range, BLOCK_S)
        x = _load_tile(x_ptr, base, tile_off, mask)
        if UNROLL == 2:  # issue the second load before the first tile is consumed
            base2, mask2 = _unit_tile(u0 + i + 1, u_end, n_sblocks, sn, ss, S, c_mask, j_range, BLOCK_S)
            x2 = _load_tile(x_ptr, base2, tile_off, mask2)
            d2 = tl.where(mask2, x2 - k, 0.0)
            acc1 += d2
            acc2 += d2 * d2
        d = tl.where(mask, x - k, 0.0)
        acc1 += d
        acc2 += d * d
    # Reduce the register tiles once per program (reducing every iteration is much slower).
    tl.store(part_ptr + pid_s * C + c, tl.sum(acc1, axis=1), mask=c_mask)
    tl.store(part_ptr + (SPLIT + pid_s) * C + c, tl.sum(acc2, axis=1), mask=c_mask)


@triton.jit
def _sum_partials(part_ptr, n_rows, C, c, c_mask, BLOCK_P: tl.constexpr, BLOCK: tl.constexpr):
    """Column sums of a float32 ``[n_rows, C]`` partials matrix for channels ``c``: ``[BLOCK]``.

    Loads ``[BLOCK_P, BLOCK]`` tiles so that many loads are in flight (a row-by-row loop is
    latency-bound: ~1 us per dependent load, with hundreds of rows). The summation order is fixed
    by the config, so results are deterministic.
    """
    p_range = tl.arange(0, BLOCK_P)
    acc = tl.zeros((BLOCK_P, BLOCK), dtype=tl.float32)
    for p0 in range(0, n_rows, BLOCK_P):
        p = p0 + p_range
        m = (p < n_rows)[:, None] & c_mask[None, :]
        acc += tl.load(part_ptr + p[:, None] * C + c[None, :], mask=m, other=0.0)
    return tl.sum(acc, axis=0)


@triton.jit
def _store_stats(stats_ptr, w_ptr, b_ptr, C, c, c_mask, mean, var, eps, HAS_W: tl.constexpr, HAS_B: tl.constexpr):
    """Writes ``stats[:, c]`` = mean, invstd, ``a = weight * invstd``, ``b = bias - mean * a``
    (``stats`` is ``[4, C]`` float32; the apply kernels compute ``y = a * x + b``)."""
    invstd = 1.0 / tl.sqrt(var + eps)
    a = invstd
    if HAS_W:
        a = a * tl.load(w_ptr + c, mask=c_mask, other=1.0).to(tl.float32)
    b = -mean * a
    if HAS_B:
        b += tl.load(b_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
    tl.store(stats_ptr + c, mean, mask=c_mask)
    tl.store(stats_ptr + C + c, invstd, mask=c_mask)
    tl.store(stats_ptr + 2 * C + c, a, mask=c_mask)
    tl.store(stats_ptr + 3 * C + c, b, mask=c_mask)


@triton.jit
def _finalize_kernel(
    x_ptr,
    part_ptr,
    w_ptr,
    b_ptr,
    rm_ptr,
    rv_ptr,
    stats_ptr,  # stats: [4, C] float32
    C,
    sc,
    SPLIT,
    M,
    momentum,
    eps,
    unbias,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    UPDATE_RUNNING: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    c_mask = c < C
    k = tl.load(x_ptr + c.to(tl.int64) * sc, mask=c_mask, other=0.0).to(tl.float32)
    s1 = _sum_partials(part_ptr, SPLIT, C, c, c_mask, BLOCK_P, BLOCK)
    s2 = _sum_partials(part_ptr + SPLIT * C, SPLIT, C, c, c_mask, BLOCK_P, BLOCK)
    d_mean = s1 / M
    mean = k + d_mean
    var = tl.maximum(s2 / M - d_mean * d_mean, 0.0)  # biased: used to normalize
    _store_stats(stats_ptr, w_ptr, b_ptr, C, c, c_mask, mean, var, eps, HAS_W, HAS_B)
    if UPDATE_RUNNING:
        rm = tl.load(rm_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
        rv = tl.load(rv_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
        # running_var stores the unbiased variance (torch's contract): unbias = M / (M - 1).
        tl.store(rm_ptr + c, (1.0 - momentum) * rm + momentum * mean, mask=c_mask)
        tl.store(rv_ptr + c, (1.0 - momentum) * rv + momentum * var * unbias, mask=c_mask)


@triton.jit
def _eval_coef_kernel(
    rm_ptr,
    rv_ptr,
    w_ptr,
    b_ptr,
    stats_ptr,
    C,
    eps,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Eval mode: stats = [running_mean, 1/sqrt(running_var + eps), a, b]."""
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    c_mask = c < C
    mean = tl.load(rm_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
    var = tl.load(rv_ptr + c, mask=c_mask, other=1.0).to(tl.float32)
    _store_stats(stats_ptr, w_ptr, b_ptr, C, c, c_mask, mean, var, eps, HAS_W, HAS_B)


@triton.jit
def _apply_kernel(
    x_ptr,
    y_ptr,
    stats_ptr,  # y = a[c] * x + b[c] (then ReLU), y has x's strides
    C,
    S,
    sn,
    sc,
    ss,
    n_sblocks,
    n_units,
    units_per_prog,
    RELU: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    c, c_mask, j_range, tile_off, c_base = _program_tile(C, sc, ss, BLOCK_C, BLOCK_S)
    pid_s = tl.program_id(1)
    x_ptr += c_base
    y_ptr += c_base
    a = tl.load(stats_ptr + 2 * C + c, mask=c_mask, other=0.0)[:, None]
    b = tl.load(stats_ptr + 3 * C + c, mask=c_mask, other=0.0)[:, None]
    u0 = pid_s * units_per_prog
    for i in range(0, units_per_prog):
        base, mask = _unit_tile(u0 + i, n_units, n_sblocks, sn, ss, S, c_mask, j_range, BLOCK_S)
        y = a * _load_tile(x_ptr, base, tile_off, mask) + b
        if RELU:
            y = tl.maximum(y, 0.0)
        tl.store(y_ptr + base + tile_off, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_accumulate(acc1, acc2, x, dy, mask, mean, a, b, RELU: tl.constexpr):
    """Adds one tile's terms of the backward sums: dy (zero where a fused ReLU was off; its mask
    is recomputed from x) to acc1 and dy * (x - mean) (zero on masked lanes) to acc2."""
    if RELU:
        dy = tl.where(a * x + b > 0.0, dy, 0.0)
    acc1 += dy
    acc2 += tl.where(mask, dy * (x - mean), 0.0)
    return acc1, acc2


@triton.jit
def _bwd_reduce_kernel(
    x_ptr,
    dy_ptr,
    stats_ptr,
    part_ptr,  # part: [2, SPLIT, C]: sum(dy), sum(dy * (x - mean))
    C,
    S,
    sn,
    sc,
    ss,
    n_sblocks,
    n_units,
    units_per_prog,
    SPLIT,
    RELU: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
    UNROLL: tl.constexpr,
    STAGES: tl.constexpr,
):
    """``UNROLL=2``: two units (four tile loads) per loop step; ``STAGES`` as in
    ``_stats_kernel`` (two tensors: twice the shared memory)."""
    c, c_mask, j_range, tile_off, c_base = _program_tile(C, sc, ss, BLOCK_C, BLOCK_S)
    pid_s = tl.program_id(1)
    x_ptr += c_base
    dy_ptr += c_base
    mean = tl.load(stats_ptr + c, mask=c_mask, other=0.0)[:, None]
    a = 0.0  # a, b: the forward's affine, read only to recompute a fused ReLU's mask
    b = 0.0
    if RELU:
        a = tl.load(stats_ptr + 2 * C + c, mask=c_mask, other=0.0)[:, None]
        b = tl.load(stats_ptr + 3 * C + c, mask=c_mask, other=0.0)[:, None]
    acc1 = tl.zeros((BLOCK_C, BLOCK_S), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_C, BLOCK_S), dtype=tl.float32)
    u0, u_end = _unit_range(pid_s, units_per_prog, n_units, UNROLL)
    for i in tl.range(0, units_per_prog, UNROLL, num_stages=STAGES):
        base, mask = _unit_tile(u0 + i, u_end, n_sblocks, sn, ss, S, c_mask, j_range, BLOCK_S)
        x = _load_tile(x_ptr, base, tile_off, mask)
        dy = _load_tile(dy_ptr, base, tile_off, mask)
        if UNROLL == 2:  # issue the second unit's loads before the first is consumed
            base2, mask2 = _unit_tile(u0 + i + 1, u_end, n_sblocks, sn, ss, S, c_mask, j_range, BLOCK_S)
            x2 = _load_tile(x_ptr, base2, tile_off, mask2)
            dy2 = _load_tile(dy_ptr, base2, tile_off, mask2)
            acc1, acc2 = _bwd_accumulate(acc1, acc2, x2, dy2, mask2, mean, a, b, RELU)
        acc1, acc2 = _bwd_accumulate(acc1, acc2, x, dy, mask, mean, a, b, RELU)
    tl.store(part_ptr + pid_s * C + c, tl.sum(acc1, axis=1), mask=c_mask)
    tl.store(part_ptr + (SPLIT + pid_s) * C + c, tl.sum(acc2, axis=1), mask=c_mask)


@triton.jit
def _bwd_finalize_kernel(
    part_ptr,
    stats_ptr,
    w_ptr,
    dw_ptr,
    db_ptr,
    k_ptr,  # k: [3, C] float32
    C,
    SPLIT,
    M,
    HAS_W: tl.constexpr,
    TRAINING: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    """dbeta = sum(dy); dgamma = sum(dy*(x-mean))*invstd; dx = k1*dy + k2*(x-mean) + k3.

    Training (mean and var depend on x):
        dx = w*invstd * (dy - sum(dy)/M - (x-mean) * invstd^2 * sum(dy*(x-mean))/M)
    so k1 = w*invstd, k2 = -k1*invstd^2*sum(dy*(x-mean))/M, k3 = -k1*sum(dy)/M.
    Eval (running statistics are constants): k1 = w*invstd, k2 = k3 = 0.
    """
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    c_mask = c < C
    s_dy = _sum_partials(part_ptr, SPLIT, C, c, c_mask, BLOCK_P, BLOCK)
    s_dyx = _sum_partials(part_ptr + SPLIT * C, SPLIT, C, c, c_mask, BLOCK_P, BLOCK)
    invstd = tl.load(stats_ptr + C + c, mask=c_mask, other=0.0)
    k1 = invstd
    if HAS_W:
        k1 = k1 * tl.load(w_ptr + c, mask=c_mask, other=1.0).to(tl.float32)
    tl.store(dw_ptr + c, s_dyx * invstd, mask=c_mask)
    tl.store(db_ptr + c, s_dy, mask=c_mask)
    if TRAINING:
        k2 = -k1 * invstd * invstd * (s_dyx / M)
        k3 = -k1 * (s_dy / M)
    else:
        k2 = tl.zeros((BLOCK,), dtype=tl.float32)
        k3 = tl.zeros((BLOCK,), dtype=tl.float32)
    tl.store(k_ptr + c, k1, mask=c_mask)
    tl.store(k_ptr + C + c, k2, mask=c_mask)
    tl.store(k_ptr + 2 * C + c, k3, mask=c_mask)


@triton.jit
def _bwd_apply_kernel(
    x_ptr,
    dy_ptr,
    dx_ptr,
    stats_ptr,
    k_ptr,
    C,
    S,
    sn,
    sc,
    ss,
    n_sblocks,
    n_units,
    units_per_prog,
    RELU: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    c, c_mask, j_range, tile_off, c_base = _program_tile(C, sc, ss, BLOCK_C, BLOCK_S)
    pid_s = tl.program_id(1)
    x_ptr += c_base
    dy_ptr += c_base
    dx_ptr += c_base
    mean = tl.load(stats_ptr + c, mask=c_mask, other=0.0)[:, None]
    k1 = tl.load(k_ptr + c, mask=c_mask, other=0.0)[:, None]
    k2 = tl.load(k_ptr + C + c, mask=c_mask, other=0.0)[:, None]
    k3 = tl.load(k_ptr + 2 * C + c, mask=c_mask, other=0.0)[:, None]
    if RELU:
        a = tl.load(stats_ptr + 2 * C + c, mask=c_mask, other=0.0)[:, None]
        b = tl.load(stats_ptr + 3 * C + c, mask=c_mask, other=0.0)[:, None]
    u0 = pid_s * units_per_prog
    for i in range(0, units_per_prog):
        base, mask = _unit_tile(u0 + i, n_units, n_sblocks, sn, ss, S, c_mask, j_range, BLOCK_S)
        x = _load_tile(x_ptr, base, tile_off, mask)
        dy = _load_tile(dy_ptr, base, tile_off, mask)
        if RELU:
            dy = tl.where(a * x + b > 0.0, dy, 0.0)
        dx = k1 * dy + k2 * (x - mean) + k3
        tl.store(dx_ptr + base + tile_off, dx.to(dx_ptr.dtype.element_ty), mask=mask)
