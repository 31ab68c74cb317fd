"""The registry of weight formats by name, with each family's default grouping.

| name                      | elements                  | scale (default grouping)             | bits/weight   |
|---------------------------|---------------------------|--------------------------------------|---------------|
| int8, int4, int3, int2    | two's complement / offset | fp16 per channel (int8), per 128     | b + 16/g      |
| mxfp8 (= mxfp8_e4m3)      | FP8 E4M3                  | E8M0 per 32 (fixed by the MX spec)   | 8.25          |
| mxfp8_e5m2                | FP8 E5M2                  | E8M0 per 32                          | 8.25          |
| mxfp6 (= mxfp6_e2m3)      | FP6 E2M3                  | E8M0 per 32                          | 6.25          |
| mxfp6_e3m2                | FP6 E3M2                  | E8M0 per 32                          | 6.25          |
| mxfp4                     | FP4 E2M1                  | E8M0 per 32                          | 4.25          |
| mxint8                    | int8 x 2^-6               | E8M0 per 32                          | 8.25          |
| fp6                       | FP6 E3M2 (FP6-LLM)        | fp16 per channel                     | 6 + 16/K      |
| ternary                   | {-1, 0, 1} (BitNet b1.58) | fp16 absmean per tensor              | 2 (+ 16/numel)|
| splitquant-<base>         | 3 x base (k-means split)  | the base format's                    | 3 x base      |

`get_format(name, group_size=None, symmetric=True)`; `group_size=None` takes the default above.

The quantization methods (RTN, GPTQ) are described here too, by `QuantMethodTraits` in
`QUANT_METHOD_TRAITS`: which formats each drives and what it needs, so that recipe validation asks
the traits instead of testing method names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from sparsekit.errors import SparsekitError
from sparsekit.quant.base import PER_CHANNEL, PER_TENSOR, QuantFormat
from sparsekit.quant.fp6 import FP6
from sparsekit.quant.integer import IntFormat
from sparsekit.quant.mx import MX_FORMATS
from sparsekit.quant.splitquant import SplitQuant
from sparsekit.quant.ternary import Ternary

AnyFormat = QuantFormat | SplitQuant

_INT_DEFAULT_GROUP = {8: PER_CHANNEL, 4: 128, 3: 128, 2: 128}
FORMATS = tuple([f"int{b}" for b in (8, 4, 3, 2)] + list(MX_FORMATS) + ["fp6", "ternary"]
                + [f"splitquant-int{b}" for b in (8, 4, 3, 2)])


def column_sweep_unfit(name: str) -> str | None:
    """Why GPTQ's column sweep (round one input column to nearest on fixed group scales, then push its
    error onto the columns not yet quantized) cannot drive format `name`; None when it can."""
    if str(name).lower().startswith("splitquant-"):
        return "its parts are chosen by k-means"
    return None


#: which formats GPTQ's column sweep can drive (a per-column round-to-nearest with group scales)
GPTQ_FORMATS = tuple(f for f in FORMATS if column_sweep_unfit(f) is None)


@dataclass(frozen=True)
class QuantMethodTraits:
    """What a quantization method needs from calibration and which recipe options it supports.

    stats: calibration statistics per projection: None (data-free, RTN) or 'hessian' (X^T X, GPTQ).
    column_sweep: quantizes input column by column, pushing each column's error onto the columns not yet
        quantized, in lazy-update blocks of `blocksize` columns (GPTQ): it drives only the formats a
        column sweep can (`column_sweep_unfit`), and its blocks and the scale groups must tile one another.
    act_order: can process inputs by decreasing Hessian diagonal.
    joint: can run inside SparseGPT's column sweep (prune + quantize in one pass, `joint: true`).
    """

    stats: Literal["hessian"] | None
    column_sweep: bool = False
    act_order: bool = False
    joint: bool = False

    @property
    def data_free(self) -> bool:
        """Whether the method quantizes without calibration data."""
        return self.stats is None

    def why_not(self, fmt: str) -> str | None:
        """Why this method cannot drive format `fmt` (a valid format name); None when it can."""
        return column_sweep_unfit(fmt) if self.column_sweep else None


#: Every quantization method with its traits, in the order error messages list them.
QUANT_METHOD_TRAITS: dict[str, QuantMethodTraits] = {
    "rtn": QuantMethodTraits(stats=None),
    "gptq": QuantMethodTraits(stats="hessian", column_sweep=True, act_order=True, joint=True),
}

QUANT_METHODS = tuple(QUANT_METHOD_TRAITS)


def quant_methods_with(trait: str) -> tuple[str, ...]:
    """The quantization methods whose boolean `trait` (or property, e.g. 'data_free') is true."""
    return tuple(m for m, t in QUANT_METHOD_TRAITS.items() if getattr(t, trait))


def quant_methods_for(fmt: str) -> tuple[str, ...]:
    """The quantization methods that can drive format `fmt`."""
    return tuple(m for m, t in QUANT_METHOD_TRAITS.items() if t.why_not(fmt) is None)


def _plain(name: str, group_size: int | None, symmetric: bool) -> QuantFormat:
    if name.startswith("int") and name[3:].isdigit():
        bits = int(name[3:])
        if bits not in _INT_DEFAULT_GROUP:
            raise SparsekitError(f"format {name!r}: integer formats are int8, int4, int3 and int2")
        return IntFormat(bits, _INT_DEFAULT_GROUP[bits] if group_size is None else group_size, symmetric)
    if not symmetric:
        raise SparsekitError(f"format {name!r} is symmetric by definition; symmetric: false is for int formats")
    makers: dict[str, Callable[..., QuantFormat]] = {**MX_FORMATS, "fp6": FP6, "ternary": Ternary}
    if name not in makers:
        raise SparsekitError(f"unknown format {name!r}; known: {', '.join(FORMATS)}")
    default = {"fp6": PER_CHANNEL, "ternary": PER_TENSOR}.get(name, 32)
    return makers[name](default if group_size is None else group_size)


def get_format(name: str, group_size: int | None = None, symmetric: bool = True) -> AnyFormat:
    """A format object by registry name (see the module table)."""
    name = str(name).lower()
    if name.startswith("splitquant-"):
        return SplitQuant(_plain(name[len("splitquant-"):], group_size, symmetric))
    return _plain(name, group_size, symmetric)
