"""GEMMs over packed weights: out[M, N] = x[M, K] @ W[N, K]^T (+ bias), W in a `sparsekit.pack` layout.

One kernel serves the 2:4 (`Semi24`), int4 (`Int4`), int4 + 2:4 (`Int4Semi24`) and MXFP4 layouts.
The weight stream is read once in its packed form (that is the decode speedup: bytes, not FLOPs)
and expanded in registers into *planes*: a packed tile of K inputs holds, for each phase j of an input
period P, the weight column at inputs k0 + P*i + j. Plane j is a dense `[BLOCK_N, BLOCK_K / P]` tile
and its partner is the activation tile at the same inputs, so

    acc += sum_j  x[:, k0 + P*i + j] @ W_j^T

runs on `tl.dot` (tensor cores) with no shuffle of the weights into input order:

- 2:4 layouts (P = 4): a group of 4 inputs stores two values and their positions i0 < i1; plane j
  takes v0 where i0 == j, v1 where i1 == j, else 0. The zeros are multiplied, so this saves bytes but
  not math (`mma.sp` in csrc/ saves both);
- int4 / MXFP4 (P = 2): byte i holds the codes of inputs 2i (low nibble) and 2i+1 (high nibble);
  each nibble plane is dequantized with the scale of its group.

Accumulation is fp32; the dequantized plane is cast to the activation dtype before `tl.dot`, as
every W4A16 kernel does. Reference: `sparsekit.ops.backends.reference.packed_linear_reference`.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# what the weight stream holds
VALUES, INT4, E2M1 = 0, 1, 2


@triton.jit
def _e2m1(code):
    """E2M1 code (0..15, sign in bit 3) -> fp32 value: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and negatives."""
    e = (code >> 1) & 3
    m = (code & 1).to(tl.float32)
    mag = tl.where(e == 0, 0.5 * m, (1.0 + 0.5 * m) * tl.exp2((e - 1).to(tl.float32)))
    return tl.where((code >> 3) != 0, -mag, mag)


@triton.jit
def _dequant(code, scale_ptr, zero_ptr, offs_n, n_mask, k_idx, k_mask, stride_s, G,
             WEIGHT: tl.constexpr, HAS_ZERO: tl.constexpr):
    """Values of the codes of inputs `k_idx` (`[BLOCK_N, BK]`) of rows `offs_n`, with their group scales."""
    lmask = n_mask[:, None] & k_mask
    g = k_idx // G
    s = tl.load(scale_ptr + offs_n[:, None] * stride_s + g, mask=lmask, other=0)
    if WEIGHT == 1:
        if HAS_ZERO:
            z = tl.load(zero_ptr + offs_n[:, None] * stride_s + g, mask=lmask, other=0).to(tl.float32)
        else:
            z = 8.0
        return (code.to(tl.float32) - z) * s.to(tl.float32)
    else:
        return _e2m1(code) * tl.exp2(s.to(tl.float32) - 127.0)


@triton.jit
def _packed_gemm_kernel(x_ptr, w_ptr, meta_ptr, scale_ptr, zero_ptr, bias_ptr, out_ptr,
                        M, N, K, K_SPLIT, M_BUCKET, stride_xm, stride_om, stride_w, stride_meta, stride_s, G,
                        SPARSE: tl.constexpr, WEIGHT: tl.constexpr, HAS_ZERO: tl.constexpr,
                        HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    # split-K: program pid_k owns inputs [pid_k * K_SPLIT, (pid_k + 1) * K_SPLIT), K_SPLIT a multiple of BLOCK_K
    k_start = pid_k * K_SPLIT
    k_end = tl.minimum(K, k_start + K_SPLIT)
    for k0 in range(k_start, k_end, BLOCK_K):
        if SPARSE:
            kg = k0 // 4 + tl.arange(0, BLOCK_K // 4)  # groups of 4 inputs
            g_mask = kg < K // 4
            wmask = n_mask[:, None] & g_mask[None, :]
            byte = tl.load(meta_ptr + offs_n[:, None] * stride_meta + kg[None, :] // 2, mask=wmask, other=0)
            shift = (kg[None, :] % 2) * 4
            i0 = (byte >> shift) & 3
            i1 = (byte >> (shift + 2)) & 3
            if WEIGHT == 0:
                v0 = tl.load(w_ptr + offs_n[:, None] * stride_w + 2 * kg[None, :], mask=wmask, other=0.0)
                v1 = tl.load(w_ptr + offs_n[:, None] * stride_w + 2 * kg[None, :] + 1, mask=wmask, other=0.0)
            else:
                codes = tl.load(w_ptr + offs_n[:, None] * stride_w + kg[None, :], mask=wmask, other=0)
                # both kept inputs of a group of 4 share its quantization group (group sizes are multiples of 4)
                v0 = _dequant(codes & 15, scale_ptr, zero_ptr, offs_n, n_mask, 4 * kg[None, :], g_mask[None, :],
                              stride_s, G, WEIGHT, HAS_ZERO)
                v1 = _dequant(codes >> 4, scale_ptr, zero_ptr, offs_n, n_mask, 4 * kg[None, :], g_mask[None, :],
                              stride_s, G, WEIGHT, HAS_ZERO)
            for j in tl.static_range(4):
                w = tl.where(i0 == j, v0, tl.where(i1 == j, v1, 0.0))
                xj = tl.load(x_ptr + offs_m[:, None] * stride_xm + 4 * kg[None, :] + j,
                             mask=m_mask[:, None] & g_mask[None, :], other=0.0)
                acc += tl.dot(xj, tl.trans(w.to(xj.dtype)))
        else:
            ki = k0 // 2 + tl.arange(0, BLOCK_K // 2)  # byte i: inputs 2i and 2i + 1
            i_mask = ki < K // 2
            byte = tl.load(w_ptr + offs_n[:, None] * stride_w + ki[None, :],
                           mask=n_mask[:, None] & i_mask[None, :], other=0)
            for p in tl.static_range(2):
                w = _dequant((byte >> (4 * p)) & 15, scale_ptr, zero_ptr, offs_n, n_mask, 2 * ki[None, :] + p,
                             i_mask[None, :], stride_s, G, WEIGHT, HAS_ZERO)
                xp = tl.load(x_ptr + offs_m[:, None] * stride_xm + 2 * ki[None, :] + p,
                             mask=m_mask[:, None] & i_mask[None, :], other=0.0)
                acc += tl.dot(xp, tl.trans(w.to(xp.dtype)))
    if HAS_BIAS:
        if pid_k == 0:
            acc += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    out_mask = m_mask[:, None] & n_mask[None, :]
    if SPLIT_K == 1:
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=out_mask)
    else:  # partial sums of the K slices meet in an fp32 buffer
        tl.atomic_add(out_ptrs, acc, mask=out_mask)


def _blocks(m: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K) without autotuning (CPU interpreter): decode shapes (M <= 16) use the
    smallest M tile `tl.dot` takes."""
    if m <= 16:
        return 16, 64, 128
    return (32, 64, 128) if m <= 64 else (64, 64, 128)


#: largest BLOCK_K of the autotune space: split-K slices are multiples of it, so every config tiles them
MAX_BLOCK_K = 256


def _m_bucket(m: int) -> int:
    """Autotune key for M: 16, 32, 64, 128, then 256+ (one tuned config per bucket, not per M)."""
    return min(256, max(16, triton.next_power_of_2(m)))


def _autotune_configs() -> list:
    """Tile shapes per M bucket: decode wants a thin M tile and long K tiles (more bytes in flight per
    load), prefill wants square-ish tiles that reuse each dequantized weight tile across more rows."""
    out = []
    for bm in (16, 32, 64, 128):
        for bn in (64, 128):
            for bk in (128, MAX_BLOCK_K):
                for warps, stages in ((4, 3), (8, 4)):
                    out.append(triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=warps,
                                             num_stages=stages))
    return out


def _prune_for_m(configs, named_args, **kwargs):
    """Keep the configs whose M tile suits the bucket (no 128-row tile for M = 1)."""
    bucket = named_args["M_BUCKET"]
    keep = [c for c in configs if c.kwargs["BLOCK_M"] <= max(16, bucket) and (bucket > 16 or c.kwargs["BLOCK_M"] == 16)]
    return keep or configs[:1]


# the kind flags are part of the key: int4 and int4 + 2:4 share tensor dtypes and shapes, and must not share
# a tuned configuration
_AUTOTUNE_KEY = ["M_BUCKET", "N", "K", "SPLIT_K", "SPARSE", "WEIGHT", "HAS_ZERO"]
_packed_gemm_autotuned = triton.autotune(configs=_autotune_configs(), key=_AUTOTUNE_KEY,
                                         prune_configs_by={"early_config_prune": _prune_for_m},
                                         reset_to_zero=["out_ptr"])(_packed_gemm_kernel)


def autotuning(device: torch.device) -> bool:
    """Whether a launch on `device` autotunes its tile shape. Not on the CPU interpreter (nothing to time),
    and not with SPARSEKIT_TRITON_AUTOTUNE=0: the fixed `_blocks` tiles then compile once per shape instead
    of up to 8 configs, which is what a correctness run on a short GPU lease needs (a kernel's first call at
    a new M costs 5-19 s of autotuning on an H200)."""
    if device.type != "cuda" or os.environ.get("TRITON_INTERPRET", "0") == "1":
        return False
    flag = os.environ.get("SPARSEKIT_TRITON_AUTOTUNE", "1").strip().lower()
    if flag not in ("0", "1", "false", "true", "no", "yes", "off", "on"):
        raise ValueError(f"SPARSEKIT_TRITON_AUTOTUNE must be 0 or 1, got {flag!r}")
    return flag in ("1", "true", "yes", "on")


def split_k_for(m: int, n: int, k: int, device: torch.device) -> int:
    """K slices for one output tile. At decode sizes (M <= 16) the M x N tiles alone do not fill the GPU
    (a 4096-row layer is 64 tiles of 64 rows on a 132-SM H100), so K is cut until ~2 tiles per SM are in
    flight: each SM then streams its own slice of the weights, which is what bandwidth-bound decode
    needs. Larger M has enough tiles. On the CPU interpreter there is nothing to fill: 1."""
    bm, bn, bk = _blocks(m)
    if device.type != "cuda" or m > 16:
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    return max(1, min(16, triton.cdiv(k, bk), triton.cdiv(2 * sms, tiles)))


#: what the weight stream holds -> the kernel's WEIGHT constant
STREAMS = {"values": VALUES, "int4": INT4, "e2m1": E2M1}


def packed_gemm(x: torch.Tensor, *, stream: torch.Tensor, weight: str, n: int, k: int, sparse: bool = False,
                meta: torch.Tensor | None = None, scales: torch.Tensor | None = None,
                zeros: torch.Tensor | None = None, group: int | None = None, bias: torch.Tensor | None = None,
                split_k: int | None = None) -> torch.Tensor:
    """Triton `x @ W^T (+ bias)` for a packed weight given as its operands (the Triton backend,
    `sparsekit.ops.backends.triton`, maps each layout to them; `sparsekit.ops.packed_linear` checks shapes).

    stream: the `[N, ...]` packed weight bytes; weight: what they hold ('values' | 'int4' | 'e2m1');
    sparse: 2:4 with `meta` positions; scales / zeros / group: per-group dequantization (group of K
    inputs per scale; default K); split_k: K slices accumulated with fp32 atomics (default `split_k_for`).
    """
    # 1. check what only this kernel needs
    if weight not in STREAMS:
        raise ValueError(f"packed_gemm: weight must be one of {', '.join(STREAMS)}, got {weight!r}")
    if x.dtype == torch.bfloat16 and not x.is_cuda:
        raise ValueError("packed_linear[triton]: the CPU interpreter has no bfloat16; use float16/float32 there")
    if sparse and meta is None:
        raise ValueError("packed_gemm: a 2:4 stream needs its meta positions")
    meta = stream if meta is None else meta          # unused pointers still need a tensor argument
    scales = stream if scales is None else scales
    group = k if not group else group
    x2 = x.reshape(-1, k).contiguous()
    m = x2.shape[0]
    if m == 0:  # no tokens: nothing to launch (and no tile count to size split-K by)
        return x.new_empty((*x.shape[:-1], n))
    bm, bn, bk = _blocks(m)
    tuned = autotuning(x.device)
    splits = split_k_for(m, n, k, x.device) if split_k is None else int(split_k)
    if splits < 1:
        raise ValueError(f"packed_linear[triton]: split_k must be >= 1, got {split_k}")
    unit = MAX_BLOCK_K if tuned else bk  # a slice must be whole tiles of whichever BLOCK_K runs
    k_split = triton.cdiv(triton.cdiv(k, splits), unit) * unit
    splits = triton.cdiv(k, k_split)
    # 2. allocate (split-K accumulates in fp32 and casts once at the end)
    out = (torch.zeros if splits > 1 else torch.empty)(m, n, dtype=torch.float32 if splits > 1 else x.dtype,
                                                       device=x.device)
    # 3. launch
    args = (x2, stream, meta, scales, zeros if zeros is not None else scales, bias if bias is not None else out, out,
            m, n, k, k_split, _m_bucket(m), x2.stride(0), out.stride(0), stream.stride(0), meta.stride(0),
            scales.stride(0), group)
    flags = dict(SPARSE=sparse, WEIGHT=STREAMS[weight], HAS_ZERO=zeros is not None, HAS_BIAS=bias is not None,
                 SPLIT_K=splits)
    if tuned:
        grid = lambda meta_: (triton.cdiv(m, meta_["BLOCK_M"]), triton.cdiv(n, meta_["BLOCK_N"]), splits)  # noqa: E731
        _packed_gemm_autotuned[grid](*args, **flags)
    else:
        _packed_gemm_kernel[(triton.cdiv(m, bm), triton.cdiv(n, bn), splits)](*args, **flags, BLOCK_M=bm, BLOCK_N=bn,
                                                                               BLOCK_K=bk)
    return out.to(x.dtype).reshape(*x.shape[:-1], n)
