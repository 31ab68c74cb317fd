"""Storage layouts; every pack has an unpack that round-trips exactly.

`bitmask`: 1-bit keep-masks of checkpoints. `layouts`: what the kernels read — 2:4 values + 2-bit
positions (`Semi24`), group-wise int4 nibbles (`Int4`), int4 + 2:4 (`Int4Semi24`) and MXFP4 (`MXFP4`);
byte layouts in `sparsekit.pack.layouts`. `int8`: per-channel int8 (`Int8`). `mma_sp`: the 2:4 layouts
in the register order of the sparse tensor cores (`Semi24MMA`, `Int4Semi24MMA`), read by csrc/.
`LAYOUTS` maps every layout kind to its class; a `Layout` subclass with a `KIND` registers itself there
(modules, `convert` and checkpoints find layouts only through it). See docs/ARCHITECTURE.md.
"""

from sparsekit.pack.bitmask import pack_mask, unpack_mask
from sparsekit.pack.layouts import (LAYOUTS, MXFP4, CompressedWeight, Int4, Int4Semi24, Kernel, Layout, Semi24,
                                    choose_layout, to_torch_semi_structured, twin_of)
from sparsekit.pack.int8 import Int8
from sparsekit.pack.mma_sp import Int4Semi24MMA, Semi24MMA, to_mma

__all__ = ["LAYOUTS", "MXFP4", "CompressedWeight", "Int4", "Int4Semi24", "Int4Semi24MMA", "Int8", "Kernel", "Layout",
           "Semi24", "Semi24MMA", "choose_layout", "pack_mask", "to_mma", "to_torch_semi_structured", "twin_of", "unpack_mask"]
