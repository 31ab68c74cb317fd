"""Packed weight layouts that the kernels read; every `pack` has an `unpack` that round-trips exactly.

All layouts are row-major over the output dimension N with the reduction dimension K contiguous, so
that a kernel streaming the weights of a tile of rows issues long coalesced (16-byte) loads along K.
Byte layouts (W is `[N, K]`, kept = the 2 non-zeros of each group of 4 consecutive inputs):

**Semi24** (2:4 sparse, fp16/bf16/fp32 values)
    values  `[N, K/2]`  the two kept values of each group of 4, in increasing input order;
    meta    `[N, K/8]`  uint8; one nibble per group of 4 (group 2j in the low nibble, 2j+1 in the
                        high one); bits 0-1 = position (0..3) of the first kept value, bits 2-3 = of
                        the second. 2 bits per kept value: the metadata density of `mma.sp`.
    bits/weight = 0.5 x (value bits + 2): 9 for fp16.

**Int4** (group-wise int4, W4A16)
    codes   `[N, K/2]`  uint8; input 2i in the low nibble, 2i+1 in the high one; a nibble holds the
                        code + 8 (symmetric, codes -7..7) or the code (asymmetric, 0..15);
    scales  `[N, G]`    fp16, G = ceil(K / group);  zeros `[N, G]` uint8 (asymmetric only).
    bits/weight = 4 + 16 / group (+ 4 / group): 4.125 at g128.

**Int4Semi24** (int4 codes of the kept 2:4 values + the Semi24 metadata + int4 group scales)
    codes   `[N, K/4]`  uint8, two kept codes per byte, in the order of Semi24.values;
    meta    `[N, K/8]`  as Semi24;  scales / zeros as Int4, indexed by the *dense* input position.
    bits/weight = 0.5 x (4 + 2) + 16 / group: 3.125 at g128.

**MXFP4** (OCP MX: E2M1 elements, one E8M0 scale per 32 inputs)
    codes   `[N, K/2]`  uint8 E2M1 nibbles as Int4;  scales `[N, K/32]` uint8 (E8M0 biased exponents).
    bits/weight = 4 + 8/32 = 4.25.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar

import torch

from sparsekit.errors import SparsekitError
from sparsekit.prune.patterns import is_nm
from sparsekit.quant.base import QTensor

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _check_2d(name: str, w: torch.Tensor, k_multiple: int) -> tuple[int, int]:
    if w.dim() != 2:
        raise SparsekitError(f"{name}: expected a 2-D [out_features, in_features] weight, got {tuple(w.shape)}")
    n, k = w.shape
    if k % k_multiple:
        raise SparsekitError(f"{name}: in_features={k} must be a multiple of {k_multiple} for this layout")
    return n, k


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """`[..., 2i]` in the low nibble and `[..., 2i+1]` in the high nibble of byte i (values 0..15)."""
    c = codes.to(torch.uint8)
    return c[..., 0::2] | (c[..., 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_nibbles` (uint8 values 0..15, last dimension doubled)."""
    lo, hi = packed & 0xF, packed >> 4
    return torch.stack([lo, hi], dim=-1).reshape(*packed.shape[:-1], -1)


def semi24_indices(mask: torch.Tensor, name: str = "weight") -> torch.Tensor:
    """Positions (0..3) of the two kept entries of every group of 4: `[N, K/4, 2]` uint8, ascending."""
    n, k = _check_2d(name, mask, 8)
    if mask.dtype != torch.bool or not is_nm(mask, 2, 4):
        raise SparsekitError(f"{name}: the 2:4 layout needs a bool mask with exactly 2 kept entries in every group "
                             "of 4 consecutive inputs (prune with pattern '2:4')")
    groups = mask.reshape(n, k // 4, 4)
    # the kept positions, ascending: sort (not kept -> 4) and take the first two
    pos = torch.where(groups, torch.arange(4, device=mask.device), torch.full_like(groups, 4, dtype=torch.long))
    return pos.sort(dim=-1).values[..., :2].to(torch.uint8)


def semi24_default_mask(weight: torch.Tensor, name: str = "weight") -> torch.Tensor:
    """The keep-mask of a weight that is already 2:4: each group of 4 inputs keeps its 2 largest-magnitude
    entries (ties: the lower input first), so kept weights that are exactly 0 still pack; a group with
    more than 2 non-zeros is refused (the weight is not 2:4: prune it or pass its keep-mask)."""
    n, k = _check_2d(name, weight, 8)
    groups = weight.detach().reshape(n, k // 4, 4)
    nonzero = (groups != 0).sum(dim=-1)
    if bool((nonzero > 2).any()):
        row, group = (int(i) for i in (nonzero > 2).nonzero()[0])
        raise SparsekitError(
            f"{name}: not 2:4 sparse: row {row}, inputs {4 * group}..{4 * group + 3} hold "
            f"{int(nonzero[row, group])} non-zeros ({int((nonzero > 2).sum())} such group(s) of 4); the 2:4 "
            "layout keeps at most 2 of every 4 consecutive inputs (prune with pattern '2:4' or pass the keep-mask)")
    # the 2 largest |w| of each group: a stable sort keeps the lower position first among equal ones
    top = groups.abs().float().sort(dim=-1, descending=True, stable=True).indices[..., :2]
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True).reshape(n, k)


def pack_meta(idx: torch.Tensor) -> torch.Tensor:
    """`[N, K/4, 2]` positions -> `[N, K/8]` uint8 metadata (a nibble per group, see module docstring)."""
    nib = idx[..., 0] | (idx[..., 1] << 2)
    return pack_nibbles(nib)


def unpack_meta(meta: torch.Tensor) -> torch.Tensor:
    """`[N, K/8]` metadata -> `[N, K/4, 2]` positions (uint8)."""
    nib = unpack_nibbles(meta)
    return torch.stack([nib & 3, (nib >> 2) & 3], dim=-1)


def _scatter24(kept: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Place the `[N, K/2]` kept values at their positions of a dense `[N, K]` tensor (zeros elsewhere)."""
    n, half = kept.shape
    dense = kept.new_zeros(n, half // 2, 4)
    dense.scatter_(2, idx.long(), kept.reshape(n, half // 2, 2))
    return dense.reshape(n, half * 2)


def _gather24(dense: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    n, k = dense.shape
    return dense.reshape(n, k // 4, 4).gather(2, idx.long()).reshape(n, k // 2)


@dataclass
class CompressedWeight:
    """What the recipe left on one projection, as `convert` hands it to the layouts.

    weight: the dense values the model computes with (pruned entries 0, quantized values on the grid);
    mask: the keep-mask of a prune step (None: not pruned); q: codes + scales of a quantize step.
    """

    weight: torch.Tensor
    mask: torch.Tensor | None = None
    q: QTensor | None = None
    name: str = "weight"

    def __post_init__(self) -> None:
        if self.q is not None and tuple(self.q.shape) != tuple(self.weight.shape):
            raise SparsekitError(f"{self.name}: codes of shape {tuple(self.q.shape)} do not belong to a weight of "
                                 f"shape {tuple(self.weight.shape)}")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight.shape)  # type: ignore[return-value]

    @functools.cached_property
    def is_24(self) -> bool:
        """The mask keeps exactly 2 of every 4 consecutive inputs (and K fills whole metadata bytes)."""
        return self.mask is not None and self.shape[1] % 8 == 0 and is_nm(self.mask, 2, 4)

    def describe(self) -> str:
        """What it is, for the report of a projection that no layout takes."""
        if self.q is not None:
            return f"format {self.q.format}"
        return "unstructured mask" if self.mask is not None else "not compressed"


@dataclass(frozen=True)
class Kernel:
    """One backend's implementation of `x @ W^T (+ bias)` for a layout.

    supports(x, layout) -> None when this kernel can run these inputs, else the reason why not (it is
    shown when the backend is asked for explicitly, and by `explain`); fn(x, layout, bias) -> output.
    """

    backend: str
    fn: Callable[[torch.Tensor, "Layout", "torch.Tensor | None"], torch.Tensor]
    supports: Callable[[torch.Tensor, "Layout"], "str | None"]


#: every layout class by its KIND; a subclass with a KIND registers itself when it is defined
LAYOUTS: dict[str, type["Layout"]] = {}


def _always(x: torch.Tensor, layout: "Layout") -> None:
    return None


#: names a layout field cannot take: `PackedLinear` registers the fields as buffers next to these
RESERVED_FIELDS = ("weight", "bias")


@functools.lru_cache(maxsize=None)
def _field_names(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(tensor fields, optional ones) of a layout class, computed once (dataclasses.fields is slow).
    A field is optional when its annotation admits None (`torch.Tensor | None`, `Optional[...]`)."""
    tensor = [f for f in fields(cls) if f.name != "shape" and f.name not in cls.ATTRS]
    clash = [f.name for f in tensor if f.name in RESERVED_FIELDS]
    if clash:
        raise SparsekitError(f"layout {cls.__name__}: field(s) {', '.join(clash)} would clash with the module's own "
                             f"{' and '.join(RESERVED_FIELDS)}; rename them")
    optional = [f.name for f in tensor if "None" in str(f.type) or "Optional" in str(f.type)]
    return tuple(f.name for f in tensor), tuple(optional)


@functools.lru_cache(maxsize=None)
def _required(cls: type) -> frozenset[str]:
    names, optional = _field_names(cls)
    return frozenset(names) - frozenset(optional)


@dataclass
class Layout(ABC):
    """A packed weight: its tensors, how it is built, which projections it fits, and its kernels.

    A new layout is one subclass (a dataclass) that sets `KIND`, lists its non-tensor fields in
    `ATTRS`, implements `unpack` and, if `convert` should choose it, `handles` / `unfit` /
    `from_compressed`; kernels register per backend with `register_kernel` (`sparsekit.ops.backends`
    for the built-in ones). The reference kernel (unpack, then a matmul) serves every layout.
    """

    KIND: ClassVar[str] = ""
    #: non-tensor fields (besides `shape`), stored in checkpoint records and module attributes
    ATTRS: ClassVar[tuple[str, ...]] = ()
    #: `convert` tries layouts in decreasing priority: the most compressed layout that fits wins
    PRIORITY: ClassVar[int] = 0
    #: the layout this one re-orders for a device's registers (a twin with the same bytes), if any
    REORDERS: ClassVar["type[Layout] | None"] = None
    #: backend name -> kernel, for this class only (see `kernels`)
    KERNELS: ClassVar[dict[str, Kernel]] = {}

    shape: tuple[int, int]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.KERNELS = {}
        if "KIND" in cls.__dict__ and cls.KIND:  # a subclass that does not name a kind of its own is no new layout
            known = LAYOUTS.get(cls.KIND)
            if known is not None and known.__qualname__ != cls.__qualname__:
                raise SparsekitError(f"layout kind {cls.KIND!r} is taken by {known.__module__}.{known.__qualname__}")
            LAYOUTS[cls.KIND] = cls

    # -- what it stores -------------------------------------------------------------------------
    @classmethod
    def tensor_fields(cls) -> tuple[str, ...]:
        """Names of the tensor fields, in declaration order (None allowed where `optional_fields` says)."""
        return _field_names(cls)[0]

    @classmethod
    def optional_fields(cls) -> tuple[str, ...]:
        return _field_names(cls)[1]

    def tensors(self) -> dict[str, torch.Tensor]:
        """The stored tensors by field name (absent optional ones left out): what safetensors holds."""
        return {name: getattr(self, name) for name in self.tensor_fields() if getattr(self, name) is not None}

    def attrs(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.ATTRS}

    @classmethod
    def from_tensors(cls, shape: tuple[int, int] | list[int], tensors: dict[str, torch.Tensor],
                     attrs: dict[str, Any] | None = None, name: str = "weight") -> "Layout":
        """The one way back from stored tensors (module buffers, checkpoint files) to a layout.

        Runs on every forward of a packed module (inside the op), so it only checks names."""
        attrs = attrs or {}
        names, optional = _field_names(cls)
        if not (_required(cls) <= tensors.keys() <= set(names)) or any(attrs.get(a) is None for a in cls.ATTRS):
            missing = [f for f in names if tensors.get(f) is None and f not in optional]
            missing += [a for a in cls.ATTRS if attrs.get(a) is None]
            if missing:
                raise SparsekitError(f"{name}: the {cls.KIND} layout needs {', '.join(missing)}, which are missing")
            unknown = sorted(set(tensors) - set(names))
            if unknown:
                raise SparsekitError(f"{name}: the {cls.KIND} layout has no tensor(s) {', '.join(unknown)}")
        return cls((int(shape[0]), int(shape[1])), **{f: tensors.get(f) for f in names},
                   **{a: attrs[a] for a in cls.ATTRS})

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.nbytes / math.prod(self.shape)

    @abstractmethod
    def unpack(self) -> torch.Tensor:
        """The dense `[N, K]` weight this layout encodes."""

    def qtensor(self) -> QTensor | None:
        """The quantizer's codes, scales and zero points in dense positions (`unpack()` is their decoding),
        or None for a layout of floating values. Exporters write these into another format's blocks, so
        grids that match carry over exactly."""
        return None

    # -- which projections it takes (`sparsekit.steps.convert`) -----------------------------------
    @classmethod
    def handles(cls, c: CompressedWeight) -> bool:
        """This layout is meant for this kind of compression (e.g. int4 codes); False: not a candidate."""
        return False

    @classmethod
    def unfit(cls, c: CompressedWeight) -> str | None:
        """Why this layout cannot hold `c` although it handles its kind (shape, grouping), or None."""
        return None

    @classmethod
    def from_compressed(cls, c: CompressedWeight, dtype: torch.dtype | None = None) -> "Layout":
        """Pack `c` (`dtype`: value dtype where the layout stores plain values)."""
        raise SparsekitError(f"the {cls.KIND} layout is not built from compressed weights")

    # -- its twin in a device's register order ----------------------------------------------------
    @classmethod
    def reorder_unfit(cls, base: "Layout") -> str | None:
        """Why `base` (a `REORDERS` layout) cannot take this byte order, or None."""
        return None

    @classmethod
    def from_base(cls, base: "Layout", name: str = "weight") -> "Layout":
        raise SparsekitError(f"the {cls.KIND} layout re-orders no other layout")

    # -- kernels ------------------------------------------------------------------------------------
    @classmethod
    def register_kernel(cls, backend: str, supports: Callable[[torch.Tensor, "Layout"], str | None] | None = None
                        ) -> Callable:
        """Decorator: `fn(x, layout, bias)` is the `backend` kernel of this layout (and of subclasses that
        register none of their own). `supports` defaults to 'always'."""
        def register(fn: Callable) -> Callable:
            cls.KERNELS[backend] = Kernel(backend, fn, supports or _always)
            return fn
        return register

    @classmethod
    def kernels(cls) -> dict[str, Kernel]:
        """Every backend's kernel for this layout: its own, then those inherited (the reference on `Layout`)."""
        out: dict[str, Kernel] = {}
        for klass in cls.__mro__:
            out = {**getattr(klass, "KERNELS", {}), **out}
        return out


def choose_layout(c: CompressedWeight) -> type[Layout] | str:
    """The highest-priority layout that holds `c`, or (a string) why none does."""
    reasons: list[str] = []
    for cls in sorted(LAYOUTS.values(), key=lambda cls: -cls.PRIORITY):
        if cls.handles(c):
            why = cls.unfit(c)
            if why is None:
                return cls
            reasons.append(why)
    if not reasons:
        return "not compressed" if c.mask is None and c.q is None else \
            f"{c.describe()}: no packed kernel yet (the values run dense)"
    return "; ".join(dict.fromkeys(reasons))


def twin_of(layout: type[Layout]) -> type[Layout] | None:
    """The layout that holds `layout`'s bytes in a device's register order (e.g. mma.sp), if one exists."""
    return next((cls for cls in LAYOUTS.values() if cls.REORDERS is layout), None)


@dataclass
class Semi24(Layout):
    """2:4 sparse values + 2-bit positions (module docstring)."""

    KIND: ClassVar[str] = "semi24"
    PRIORITY: ClassVar[int] = 10
    values: torch.Tensor
    meta: torch.Tensor

    @classmethod
    def handles(cls, c: CompressedWeight) -> bool:
        return c.q is None and c.mask is not None

    @classmethod
    def unfit(cls, c: CompressedWeight) -> str | None:
        if not c.is_24:
            return "unstructured mask: no packed kernel (the 2:4 layout needs 2 kept of every 4 inputs and " \
                   "in_features % 8 == 0; zeros stay in the dense weight)"
        return None

    @classmethod
    def from_compressed(cls, c: CompressedWeight, dtype: torch.dtype | None = None) -> "Semi24":
        w = c.weight.detach()
        mask = c.mask.to(w.device)
        return cls.pack(w.to(dtype or w.dtype).masked_fill(~mask, 0), mask, c.name)

    @classmethod
    def pack(cls, weight: torch.Tensor, mask: torch.Tensor | None = None, name: str = "weight") -> "Semi24":
        """Pack a 2:4-sparse weight under `mask` (default: `semi24_default_mask`)."""
        if weight.dtype not in FLOAT_DTYPES:
            raise SparsekitError(f"{name}: the 2:4 layout stores float16/bfloat16/float32 values, got {weight.dtype}")
        if mask is None:
            mask = semi24_default_mask(weight, name)
        idx = semi24_indices(mask, name)
        return cls(tuple(weight.shape), _gather24(weight, idx).contiguous(), pack_meta(idx))

    def indices(self) -> torch.Tensor:
        return unpack_meta(self.meta)

    def unpack(self) -> torch.Tensor:
        return _scatter24(self.values, self.indices())

    def mask(self) -> torch.Tensor:
        n, k = self.shape
        keep = torch.zeros(n, k // 4, 4, dtype=torch.bool, device=self.meta.device)
        keep.scatter_(2, self.indices().long(), True)
        return keep.reshape(n, k)


PER_TENSOR = "per-tensor scales: the packed int4 layouts need per-channel or group scales"


def _int4_nibbles(q: QTensor) -> torch.Tensor:
    if q.format != "int4":
        raise SparsekitError(f"the int4 layouts pack int4 codes, got format {q.format!r}")
    return q.codes.to(torch.int16) + (8 if q.zeros is None else 0)


def _int4_qtensor(nibbles: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, group: int,
                  shape: tuple[int, int]) -> QTensor:
    """The int4 QTensor of dense-position `nibbles` (symmetric codes are stored + 8)."""
    if zeros is None:
        codes = (nibbles.to(torch.int16) - 8).to(torch.int8)
    else:
        codes = nibbles.to(torch.uint8)
    return QTensor("int4", codes, scales.float(), None if zeros is None else zeros.float(), group,
                   (int(shape[0]), int(shape[1])))


def _int4_values(nibbles: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, group: int,
                 k: int) -> torch.Tensor:
    """Dequantized `[N, K]` values of dense-position `nibbles` with group scales (fp32)."""
    gidx = torch.arange(k, device=nibbles.device) // group
    s = scales.float()[:, gidx]
    off = zeros.float()[:, gidx] if zeros is not None else 8.0
    return (nibbles.float() - off) * s


@dataclass
class Int4(Layout):
    """Group-wise int4 codes, two per byte, with fp16 scales (module docstring)."""

    KIND: ClassVar[str] = "int4"
    ATTRS: ClassVar[tuple[str, ...]] = ("group_size",)
    PRIORITY: ClassVar[int] = 20
    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    group_size: int

    @classmethod
    def handles(cls, c: CompressedWeight) -> bool:
        return c.q is not None and c.q.format == "int4"

    @classmethod
    def unfit(cls, c: CompressedWeight) -> str | None:
        if c.q.group_size < 0:
            return PER_TENSOR
        k = c.shape[1]
        return None if k % 2 == 0 else f"int4 nibbles need an even in_features, got {k}"

    @classmethod
    def from_compressed(cls, c: CompressedWeight, dtype: torch.dtype | None = None) -> "Int4":
        return cls.pack(c.q, c.name)

    @classmethod
    def pack(cls, q: QTensor, name: str = "weight") -> "Int4":
        n, k = _check_2d(name, q.codes, 2)
        group = _dense_group(q, k, name)
        return cls((n, k), pack_nibbles(_int4_nibbles(q)), q.scales.to(torch.float16).contiguous(),
                   None if q.zeros is None else q.zeros.to(torch.uint8).contiguous(), group)

    def unpack(self) -> torch.Tensor:
        return _int4_values(unpack_nibbles(self.codes), self.scales, self.zeros, self.group_size, self.shape[1])

    def qtensor(self) -> QTensor:
        return _int4_qtensor(unpack_nibbles(self.codes), self.scales, self.zeros, self.group_size, self.shape)


@dataclass
class Int4Semi24(Layout):
    """int4 codes of the kept values of a 2:4 weight + positions + group scales (module docstring)."""

    KIND: ClassVar[str] = "int4_semi24"
    ATTRS: ClassVar[tuple[str, ...]] = ("group_size",)
    PRIORITY: ClassVar[int] = 30
    codes: torch.Tensor
    meta: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    group_size: int

    @classmethod
    def handles(cls, c: CompressedWeight) -> bool:
        return c.q is not None and c.q.format == "int4" and c.is_24

    @classmethod
    def unfit(cls, c: CompressedWeight) -> str | None:
        if c.q.group_size < 0:
            return PER_TENSOR
        group = c.q.group_size or c.shape[1]
        # both kept values of a group of 4 inputs must share one scale (the kernels read one per group of 4)
        return None if group % 4 == 0 else f"int4 + 2:4 needs group_size % 4 == 0, got {group}"

    @classmethod
    def from_compressed(cls, c: CompressedWeight, dtype: torch.dtype | None = None) -> "Int4Semi24":
        return cls.pack(c.q, c.mask.to(c.q.codes.device), c.name)

    @classmethod
    def pack(cls, q: QTensor, mask: torch.Tensor, name: str = "weight") -> "Int4Semi24":
        n, k = _check_2d(name, q.codes, 8)
        group = _dense_group(q, k, name)
        idx = semi24_indices(mask, name)
        kept = _gather24(_int4_nibbles(q), idx)
        return cls((n, k), pack_nibbles(kept), pack_meta(idx), q.scales.to(torch.float16).contiguous(),
                   None if q.zeros is None else q.zeros.to(torch.uint8).contiguous(), group)

    def mask(self) -> torch.Tensor:
        return Semi24(self.shape, self.codes, self.meta).mask()

    def unpack(self) -> torch.Tensor:
        n, k = self.shape
        idx = unpack_meta(self.meta)
        nibbles = _scatter24(unpack_nibbles(self.codes).to(torch.int16), idx)
        values = _int4_values(nibbles, self.scales, self.zeros, self.group_size, k)
        return values.masked_fill(~self.mask(), 0.0)

    def qtensor(self) -> QTensor:
        n, k = self.shape
        nibbles = _scatter24(unpack_nibbles(self.codes).to(torch.int16), unpack_meta(self.meta))
        # a pruned position decodes to 0: the code 0 (nibble 8) when symmetric, the group's zero point if not
        gidx = torch.arange(k, device=nibbles.device) // self.group_size
        zero = torch.full_like(nibbles, 8) if self.zeros is None else self.zeros.to(torch.int16)[:, gidx]
        return _int4_qtensor(torch.where(self.mask(), nibbles, zero), self.scales, self.zeros, self.group_size,
                             self.shape)


@dataclass
class MXFP4(Layout):
    """E2M1 nibbles + E8M0 scales per 32 inputs (module docstring)."""

    KIND: ClassVar[str] = "mxfp4"
    PRIORITY: ClassVar[int] = 20
    codes: torch.Tensor
    scales: torch.Tensor

    @classmethod
    def handles(cls, c: CompressedWeight) -> bool:
        return c.q is not None and c.q.format == "mxfp4"

    @classmethod
    def unfit(cls, c: CompressedWeight) -> str | None:
        k = c.shape[1]
        return None if k % 32 == 0 else f"mxfp4 needs in_features % 32 == 0, got {k}"

    @classmethod
    def from_compressed(cls, c: CompressedWeight, dtype: torch.dtype | None = None) -> "MXFP4":
        return cls.pack(c.q, c.name)

    @classmethod
    def pack(cls, q: QTensor, name: str = "weight") -> "MXFP4":
        from sparsekit.quant.mx import e8m0_encode

        if q.format != "mxfp4":
            raise SparsekitError(f"{name}: the MXFP4 layout packs mxfp4 codes, got format {q.format!r}")
        n, k = _check_2d(name, q.codes, 32)
        return cls((n, k), pack_nibbles(q.codes), e8m0_encode(q.scales).contiguous())

    def unpack(self) -> torch.Tensor:
        from sparsekit.quant import minifloat as mf
        from sparsekit.quant.mx import MX_BLOCK, e8m0_decode

        values = mf.decode(unpack_nibbles(self.codes), mf.E2M1)
        return values * e8m0_decode(self.scales).repeat_interleave(MX_BLOCK, dim=1)

    def qtensor(self) -> QTensor:
        from sparsekit.quant.mx import MX_BLOCK, e8m0_decode

        return QTensor("mxfp4", unpack_nibbles(self.codes), e8m0_decode(self.scales).float(), None, MX_BLOCK,
                       (int(self.shape[0]), int(self.shape[1])))


def _dense_group(q: QTensor, k: int, name: str) -> int:
    if q.group_size <= 0:
        if q.group_size == 0:
            return k
        raise SparsekitError(f"{name}: {PER_TENSOR}")
    return q.group_size


def to_torch_semi_structured(weight: torch.Tensor) -> torch.Tensor:
    """The 2:4 weight in torch's own semi-structured format (cuSPARSELt / CUTLASS), the baseline backend.

    Needs a CUDA tensor of fp16/bf16 on a GPU with sparse tensor cores (sm_80+); the metadata order
    is torch's (hardware-specific), so sparsekit's kernels read `Semi24` instead.
    """
    if not weight.is_cuda:
        raise SparsekitError("torch's semi-structured sparse format lives on CUDA devices; move the weight to a GPU "
                             "(cuSPARSELt/CUTLASS are GPU libraries)")
    if weight.dtype not in (torch.float16, torch.bfloat16):
        raise SparsekitError(f"torch's semi-structured format takes float16/bfloat16 weights, got {weight.dtype}")
    from torch.sparse import to_sparse_semi_structured

    return to_sparse_semi_structured(weight)
