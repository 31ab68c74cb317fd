"""Minifloat element codecs: the FP8 / FP6 / FP4 element types of OCP MX v1.0 and OCP FP8.

A minifloat is `1 sign | ebits exponent | mbits mantissa` with exponent bias `bias`. Biased exponent
0 encodes subnormals (value `mant * 2^(emin - mbits)`, no implicit 1) and +/-0; every other biased
exponent is normal (`(2^mbits + mant) * 2^(e - mbits)`). Special values follow one of three
conventions, recorded by `has_inf` / `has_nan`:

- `has_inf` (E5M2, IEEE-754 style): the all-ones exponent is reserved, mantissa 0 = Inf, else NaN;
- `has_nan` only (E4M3 "FN", finite + NaN): only S.1111.111 is NaN, the rest of the top binade is
  normal — which is how E4M3 reaches 448 rather than 240;
- neither (the MX FP6 / FP4 types): every code is a finite number.

Codes are `uint8` holding the `bits`-wide pattern in the low bits (sign at bit `bits - 1`): the
form a packer or a hardware LUT consumes. Encoding is arithmetic and vectorised (no per-element
Python), so it runs on any device at tensor speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

__all__ = ["Minifloat", "E4M3", "E5M2", "E2M3", "E3M2", "E2M1", "FORMATS", "encode", "decode", "value_table",
           "representable_values", "pow2", "divide_saturating"]


@dataclass(frozen=True)
class Minifloat:
    """One minifloat element type (see the module docstring for the encoding conventions)."""

    name: str
    ebits: int
    mbits: int
    bias: int
    max_normal: float
    has_inf: bool
    has_nan: bool

    def __post_init__(self) -> None:
        # max_normal is stated (it is what the specs publish) but must agree with the bit layout;
        # a typo here would silently shift every scale computed from `emax`.
        top = (1 << self.ebits) - 1 - (1 if self.has_inf else 0)  # largest biased exponent of a normal
        mant = (1 << self.mbits) - 1 - (1 if (self.has_nan and not self.has_inf) else 0)
        derived = (1 + mant / (1 << self.mbits)) * 2.0 ** (top - self.bias)
        if derived != self.max_normal:
            raise ValueError(f"{self.name}: max_normal {self.max_normal} disagrees with the bit layout ({derived})")
        if self.bits > 8:
            raise ValueError(f"{self.name}: {self.bits}-bit codes do not fit the uint8 code tensors used here")

    @property
    def bits(self) -> int:
        """Width of one code: sign + exponent + mantissa."""
        return 1 + self.ebits + self.mbits

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest normal (the MX spec's `emax_elem` in the §6.3 conversion)."""
        return math.frexp(self.max_normal)[1] - 1

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal; subnormals share it (biased exponent 0 -> 1 - bias)."""
        return 1 - self.bias

    @property
    def nan_code(self) -> int | None:
        """Canonical (positive) NaN code, or None for a format without NaN."""
        if not (self.has_nan or self.has_inf):
            return None
        return (1 << (self.bits - 1)) - 1  # S=0, all exponent and mantissa bits set: NaN in both styles

    @property
    def inf_code(self) -> int | None:
        """+Inf code, or None for a format without infinities."""
        return ((1 << self.ebits) - 1) << self.mbits if self.has_inf else None


# OCP 8-bit Floating Point Specification (OFP8) rev 1.0 and OCP Microscaling Formats (MX) v1.0 element types.
E4M3 = Minifloat("e4m3", ebits=4, mbits=3, bias=7, max_normal=448.0, has_inf=False, has_nan=True)
E5M2 = Minifloat("e5m2", ebits=5, mbits=2, bias=15, max_normal=57344.0, has_inf=True, has_nan=True)
E2M3 = Minifloat("e2m3", ebits=2, mbits=3, bias=1, max_normal=7.5, has_inf=False, has_nan=False)
E3M2 = Minifloat("e3m2", ebits=3, mbits=2, bias=3, max_normal=28.0, has_inf=False, has_nan=False)
E2M1 = Minifloat("e2m1", ebits=2, mbits=1, bias=1, max_normal=6.0, has_inf=False, has_nan=False)

FORMATS: dict[str, Minifloat] = {f.name: f for f in (E4M3, E5M2, E2M3, E3M2, E2M1)}


def pow2(e: torch.Tensor) -> torch.Tensor:
    """Exact fp32 `2^e` for integer `e` in [-149, 127], built from the bit pattern.

    Built from bits rather than with `exp2`/`pow` so that exactness does not depend on a backend's
    transcendental implementation: every scale in this package must be an exact power of two, or
    dividing by it would round. e <= -127 gives fp32 subnormals (2^-127 is the smallest E8M0 scale).
    """
    e = e.to(torch.int32)
    normal = ((e + 127).clamp(min=1) << 23)
    sub = torch.ones_like(e) << (e + 149).clamp(min=0, max=22)
    return torch.where(e >= -126, normal, sub).view(torch.float32)


def _floor_log2(a: torch.Tensor) -> torch.Tensor:
    """floor(log2(a)) for finite a > 0 (int32), exact: frexp gives a = m * 2^E with m in [0.5, 1)."""
    return torch.frexp(a)[1] - 1


def encode(x: torch.Tensor, fmt: Minifloat) -> torch.Tensor:
    """Codes (uint8) of fp32 values `x` in `fmt`.

    Rounding is to nearest, ties to even (the OFP8 and MX §6.3 conversions); finite values beyond the
    range saturate to +/-max_normal (the MX conversion clamps instead of overflowing to Inf/NaN,
    which a weight quantizer must never produce). NaN gives the format's NaN code; +/-Inf gives
    Inf where the format has one, else NaN, else ValueError (quantizers reject non-finite weights
    before they get here, see `QuantFormat.check_finite`). -0 keeps its sign bit.
    """
    x = x.float()
    nan = torch.isnan(x)
    inf = torch.isinf(x)
    if (nan.any() or inf.any()) and fmt.nan_code is None:
        raise ValueError(f"{fmt.name} has no NaN/Inf encoding; {int((nan | inf).sum())} non-finite value(s) given")

    sign = torch.signbit(x)
    a = x.abs().nan_to_num(nan=0.0, posinf=0.0).clamp(max=fmt.max_normal)  # saturate finite overflow

    # The quantum (spacing of the grid) around `a` is 2^(e - mbits) with e = its binade, clamped
    # below at emin: the subnormal range shares the smallest normal's spacing. Dividing by a power
    # of two is exact, and torch.round rounds half to even, so n is the correctly rounded count of
    # quanta: its low bit is the mantissa's low bit, i.e. ties go to an even mantissa.
    e = _floor_log2(a).clamp(min=fmt.emin)  # a == 0 -> frexp exponent 0, clamped; it encodes as n = 0
    n = torch.round(a / pow2(e - fmt.mbits)).to(torch.int32)
    # Rounding up can carry into the next binade (n == 2^(mbits+1)): renormalise. Saturation above
    # guarantees this never passes max_normal (max_normal is itself on the grid).
    carry = n >= (2 << fmt.mbits)
    e = torch.where(carry, e + 1, e)
    n = torch.where(carry, n >> 1, n)
    normal = n >= (1 << fmt.mbits)  # else subnormal or zero (only possible when e == emin)
    bexp = torch.where(normal, e + fmt.bias, torch.zeros_like(e))
    mant = n & ((1 << fmt.mbits) - 1)
    code = (sign.to(torch.int32) << (fmt.bits - 1)) | (bexp << fmt.mbits) | mant
    if fmt.nan_code is not None:
        special = fmt.inf_code if fmt.has_inf else fmt.nan_code
        code = torch.where(inf, (sign.to(torch.int32) << (fmt.bits - 1)) | special, code)
        code = torch.where(nan, torch.full_like(code, fmt.nan_code), code)
    return code.to(torch.uint8)


def divide_saturating(x: torch.Tensor, scale: torch.Tensor, fmt: Minifloat) -> torch.Tensor:
    """`x / scale`, with a finite `x` whose quotient overflows fp32 mapped to +/-max_normal.

    A block/row scale is chosen from the *kept* weights only, so a pruned weight (whose code is
    discarded afterwards) can be many orders larger than its block's scale — with a fully pruned
    MX block's 2^-127 the quotient overflows to Inf even in fp32. Such a value is a finite value
    beyond the range, so it saturates like any other, instead of being rejected as non-finite.
    """
    x = x.float()
    q = x / scale
    over = torch.isinf(q) & torch.isfinite(x)
    return torch.where(over, torch.copysign(torch.full_like(q, fmt.max_normal), q), q)


@lru_cache(maxsize=None)
def _table_cpu(fmt: Minifloat) -> torch.Tensor:
    c = torch.arange(1 << fmt.bits, dtype=torch.int32)
    sign = c >> (fmt.bits - 1)
    bexp = (c >> fmt.mbits) & ((1 << fmt.ebits) - 1)
    mant = c & ((1 << fmt.mbits) - 1)
    # subnormal: mant * 2^(emin - mbits); normal: (2^mbits + mant) * 2^(bexp - bias - mbits)
    sig = torch.where(bexp == 0, mant, mant + (1 << fmt.mbits)).float()
    val = sig * pow2(torch.where(bexp == 0, torch.full_like(bexp, fmt.emin), bexp - fmt.bias) - fmt.mbits)
    val = torch.where(sign == 1, -val, val)
    top = bexp == (1 << fmt.ebits) - 1
    if fmt.has_inf:
        val = torch.where(top & (mant == 0), torch.where(sign == 1, -math.inf, math.inf), val)
        val = torch.where(top & (mant != 0), math.nan, val)
    elif fmt.has_nan:
        val = torch.where(top & (mant == (1 << fmt.mbits) - 1), math.nan, val)
    return val


def value_table(fmt: Minifloat, device: torch.device | str | None = None) -> torch.Tensor:
    """fp32 value of every code 0 .. 2^bits - 1 (NaN / +-Inf at the special codes).

    A table, because decode is then one gather: the same thing a GPU dequantize kernel does with a
    16- or 64-entry LUT in registers/shared memory for FP4/FP6.
    """
    t = _table_cpu(fmt)
    return t if device is None else t.to(device)


def decode(codes: torch.Tensor, fmt: Minifloat) -> torch.Tensor:
    """fp32 values of `codes` (any integer dtype; only the low `bits` bits are read)."""
    idx = codes.to(torch.int64) & ((1 << fmt.bits) - 1)
    return value_table(fmt, codes.device)[idx]


def representable_values(fmt: Minifloat) -> torch.Tensor:
    """Sorted unique finite values of `fmt` (+0 and -0 collapse to one 0)."""
    t = value_table(fmt)
    return torch.unique(t[torch.isfinite(t)])  # torch.unique sorts
