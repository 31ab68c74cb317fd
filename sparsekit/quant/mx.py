"""OCP Microscaling (MX) v1.0 block formats: MXFP8 / MXFP6 / MXFP4 / MXINT8.

An MX block is 32 consecutive elements along K sharing one E8M0 scale (a bare 8-bit exponent,
value 2^(u - 127), u = 255 is NaN). The block size is fixed by the spec (k = 32 for every concrete
format, §5) and by the hardware that consumes it (block-scaled MMA instructions read one scale per
32 K), so it is not a free parameter here.

The shared scale is the spec's conversion (§6.3):

    X = 2^(floor(log2(amax)) - emax_elem),      P_i = quantize_elem(V_i / X),

`emax_elem` being the exponent of the element type's largest normal: amax / X then lies in
[2^emax_elem, 2^(emax_elem+1)), the top binade of the element type, and what lies beyond
max_normal saturates (E2M1: amax / X is in [4, 8), anything above 6 becomes 6). Scaling by X is
by an exact power of two, so all rounding happens in the element codec (bar decoded values that
fall into fp32's subnormal range, with scales near 2^-127).
"""

from __future__ import annotations

import torch

from sparsekit.errors import SparsekitError
from sparsekit.quant import minifloat as mf
from sparsekit.quant.base import Params, QuantFormat, masked_amax

__all__ = ["MX_BLOCK", "E8M0_MIN", "E8M0_MAX", "MXFormat", "MXFP8_E4M3", "MXFP8_E5M2", "MXFP6_E2M3", "MXFP6_E3M2",
           "MXFP4", "MXINT8", "MX_FORMATS", "e8m0_encode", "e8m0_decode", "shared_exponent"]

#: elements per shared scale (OCP MX v1.0 §5: k = 32 for every concrete format)
MX_BLOCK = 32
#: E8M0 exponent range (biased 0..254; 255 is NaN)
E8M0_MIN, E8M0_MAX = -127, 127


def e8m0_encode(scale: torch.Tensor) -> torch.Tensor:
    """uint8 E8M0 codes (biased exponent e + 127) of power-of-two fp32 scales; NaN -> 255."""
    s = scale.float()
    nan = torch.isnan(s)
    e = torch.frexp(s.nan_to_num(nan=1.0))[1] - 1
    ok = (mf.pow2(e.clamp(E8M0_MIN, E8M0_MAX)) == s) | nan
    if not bool(ok.all()):
        raise ValueError("e8m0_encode: scales must be powers of two in [2^-127, 2^127] (or NaN)")
    return torch.where(nan, torch.full_like(e, 255), e + 127).to(torch.uint8)


def e8m0_decode(codes: torch.Tensor) -> torch.Tensor:
    """fp32 scales 2^(u - 127) of uint8 E8M0 codes; 255 -> NaN (2^-127 is an fp32 subnormal, exact)."""
    u = codes.to(torch.int32)
    return torch.where(u == 255, torch.full(u.shape, float("nan"), device=u.device),
                       mf.pow2((u - 127).clamp(E8M0_MIN, E8M0_MAX)))


def shared_exponent(amax: torch.Tensor, emax_elem: int) -> torch.Tensor:
    """floor(log2(amax)) - emax_elem clamped to the E8M0 range (int32); amax == 0 -> -127.

    An all-zero (or fully pruned) block gets the smallest scale: its elements all encode to 0
    whatever the scale, and the smallest one is what the reference conversion produces (log2(0)
    = -inf, clamped).
    """
    e = torch.frexp(amax.float())[1] - 1 - emax_elem  # exact floor(log2) for finite amax > 0
    return torch.where(amax > 0, e, torch.full_like(e, E8M0_MIN)).clamp(E8M0_MIN, E8M0_MAX)


class MXFormat(QuantFormat):
    """An MX format: 32-element blocks along K, one E8M0 scale each, minifloat elements.

    `params` returns `(scale,)` with scale the fp32 value 2^e (`[groups, 1]`), which is how
    `QTensor.scales` holds it; `e8m0_encode` gives the 8 bits actually stored.
    """

    element: mf.Minifloat
    scale_bits = 8
    zero_bits = 0

    def __init__(self, group_size: int = MX_BLOCK) -> None:
        if group_size != MX_BLOCK:
            raise SparsekitError(f"{self.name}: OCP MX v1.0 fixes the block at {MX_BLOCK} inputs per E8M0 scale; "
                                 f"got group_size={group_size}, use {MX_BLOCK} (or an int/fp6 format for other groups)")
        super().__init__(MX_BLOCK)

    @property
    def emax_elem(self) -> int:
        """Exponent of the element type's largest normal (the emax_elem of the §6.3 conversion)."""
        return self.element.emax

    def params(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> Params:
        return (mf.pow2(shared_exponent(masked_amax(x, keep), self.emax_elem)),)

    def encode(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        # exact: dividing by a power of two (fp32 keeps every quotient of a kept weight representable)
        return mf.encode(mf.divide_saturating(x, params[0], self.element), self.element)

    def decode(self, codes: torch.Tensor, params: Params) -> torch.Tensor:
        return mf.decode(codes, self.element) * params[0]


class MXFP8_E4M3(MXFormat):  # noqa: N801 - the spec's name
    """MXFP8 with E4M3 elements (OFP8 'FN': max 448, no Inf)."""

    name = "mxfp8_e4m3"
    element = mf.E4M3
    element_bits = 8.0


class MXFP8_E5M2(MXFormat):  # noqa: N801
    """MXFP8 with E5M2 elements (max 57344, IEEE-style Inf/NaN, never produced from finite weights)."""

    name = "mxfp8_e5m2"
    element = mf.E5M2
    element_bits = 8.0


class MXFP6_E2M3(MXFormat):  # noqa: N801
    """MXFP6 with E2M3 elements (max 7.5): more mantissa, the usual choice for weights."""

    name = "mxfp6_e2m3"
    element = mf.E2M3
    element_bits = 6.0


class MXFP6_E3M2(MXFormat):  # noqa: N801
    """MXFP6 with E3M2 elements (max 28)."""

    name = "mxfp6_e3m2"
    element = mf.E3M2
    element_bits = 6.0


class MXFP4(MXFormat):
    """MXFP4: E2M1 elements (values 0, 0.5, 1, 1.5, 2, 3, 4, 6); 4.25 bits per weight."""

    name = "mxfp4"
    element = mf.E2M1
    element_bits = 4.0


class MXINT8(MXFormat):
    """MXINT8: 8-bit two's complement elements with an implicit scale of 2^-6 (MX v1.0 §5).

    Element values are int8 * 2^-6 in [-2, 1.984375], so emax_elem = 0. Encoding rounds half to
    even and saturates to +/-127: the spec leaves -128 (= -2) representable but symmetric
    saturation keeps the grid symmetric, so a sign flip of the weight flips only the code's sign.
    Codes are torch.int8; decode also accepts the same bit pattern as uint8.
    """

    name = "mxint8"
    element_bits = 8.0
    #: the implicit element scale 2^-6 as an exponent
    FRAC_BITS = 6

    @property
    def emax_elem(self) -> int:
        return 0

    def encode(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        q = x.float() / params[0] * (1 << self.FRAC_BITS)  # both exact power-of-two scalings
        # clamp also maps the Inf that a pruned weight over a tiny scale can produce to +/-127
        return torch.round(q).clamp(-127, 127).to(torch.int8)

    def decode(self, codes: torch.Tensor, params: Params) -> torch.Tensor:
        c = codes.view(torch.int8) if codes.dtype == torch.uint8 else codes
        return c.to(torch.float32) * (2.0 ** -self.FRAC_BITS) * params[0]


#: name -> format class, with the short aliases ('mxfp8' = E4M3, 'mxfp6' = E2M3: the element type
#: each family is normally used with for weights). A package-wide registry can merge this.
MX_FORMATS: dict[str, type[MXFormat]] = {
    "mxfp8_e4m3": MXFP8_E4M3,
    "mxfp8": MXFP8_E4M3,
    "mxfp8_e5m2": MXFP8_E5M2,
    "mxfp6_e2m3": MXFP6_E2M3,
    "mxfp6": MXFP6_E2M3,
    "mxfp6_e3m2": MXFP6_E3M2,
    "mxfp4": MXFP4,
    "mxint8": MXINT8,
}
