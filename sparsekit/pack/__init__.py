"""Storage layouts; every pack has an unpack that round-trips exactly.

`bitmask`: 1-bit keep-masks of checkpoints. `layouts`: what the kernels read — 2:4 values + 2-bit
positions (`Semi24`), group-wise int4 nibbles (`Int4`), int4 + 2:4 (`Int4Semi24`) and MXFP4 (`MXFP4`);
byte layouts in `sparsekit.pack.layouts`. `mma_sp`: the 2:4 layouts in the register order of the
sparse tensor cores (`Semi24MMA`, `Int4Semi24MMA`), read by the CUDA kernels of csrc/.
`LAYOUTS` maps every layout kind to its class (modules and checkpoints rebuild layouts from it).
"""

from sparsekit.pack.bitmask import pack_mask, unpack_mask
from sparsekit.pack.layouts import BASE_LAYOUTS, MXFP4, Int4, Int4Semi24, Layout, Semi24, to_torch_semi_structured
from sparsekit.pack.mma_sp import MMA_LAYOUTS, Int4Semi24MMA, Semi24MMA, to_mma

LAYOUTS: dict[str, type[Layout]] = {**BASE_LAYOUTS, **MMA_LAYOUTS}

__all__ = ["LAYOUTS", "MXFP4", "Int4", "Int4Semi24", "Int4Semi24MMA", "Layout", "Semi24", "Semi24MMA", "pack_mask",
           "to_mma", "to_torch_semi_structured", "unpack_mask"]
