"""Storage layouts; every pack has an unpack that round-trips exactly.

`bitmask`: 1-bit keep-masks of checkpoints. `layouts`: what the kernels read — 2:4 values + 2-bit
positions (`Semi24`), group-wise int4 nibbles (`Int4`), int4 + 2:4 (`Int4Semi24`) and MXFP4 (`MXFP4`);
byte layouts in `sparsekit.pack.layouts`.
"""

from sparsekit.pack.bitmask import pack_mask, unpack_mask
from sparsekit.pack.layouts import LAYOUTS, MXFP4, Int4, Int4Semi24, Layout, Semi24, to_torch_semi_structured

__all__ = ["LAYOUTS", "MXFP4", "Int4", "Int4Semi24", "Layout", "Semi24", "pack_mask", "to_torch_semi_structured",
           "unpack_mask"]
