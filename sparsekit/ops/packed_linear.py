"""packed_linear(x, layout, bias) = x @ W^T (+ bias) for a weight W stored in a packed layout.

One op over every layout of `sparsekit.pack`. The layout is the dispatch point: each layout class
holds its kernels per backend (`Layout.register_kernel`, done by `sparsekit.ops.backends`), each with
a `supports(x, layout)` that says yes or why not. `backend='auto'` takes the first backend of
`AUTO_ORDER` whose kernel supports the inputs (an `OPT_IN` backend runs only when named); an explicit
backend that cannot run is an error that names the reason; `explain(x, layout)` lists every backend's answer.

The op is the torch custom op `sparsekit::packed_linear` (a fake implementation gives its output
shape), so a converted model traces under `torch.compile(fullgraph=True)` and `torch.export` with the
kernel as one opaque node. A layout crosses the op boundary as its tensors plus a `spec` string (kind,
shape, field names, attributes), which torch treats as a constant of the graph.
"""

from __future__ import annotations

import functools
import json
import logging

import torch

import sparsekit.ops.backends  # noqa: F401  (registers the kernels)
from sparsekit import _ext
from sparsekit.ops._dispatch import AUTO_ORDER, BACKENDS, OPT_IN
from sparsekit.ops.backends.cpu import CPP_KINDS
from sparsekit.ops.backends.reference import packed_linear_reference
from sparsekit.pack.layouts import LAYOUTS, Kernel, Layout

log = logging.getLogger(__name__)

ACTIVATION_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_inputs(x: torch.Tensor, layout: Layout, bias: torch.Tensor | None) -> None:
    """Shape, dtype and device checks shared by every backend; errors name the constraint."""
    n, k = layout.shape
    if x.shape[-1] != k:
        raise ValueError(f"packed_linear: input has {x.shape[-1]} features but the {layout.KIND} weight has "
                         f"in_features={k}")
    if x.dtype not in ACTIVATION_DTYPES:
        raise ValueError(f"packed_linear: activations must be float16/bfloat16/float32, got {x.dtype}")
    for name, t in layout.tensors().items():
        if t.device != x.device:
            raise ValueError(f"packed_linear: the input is on {x.device} but the weight's {name} is on {t.device}; "
                             "move the module with .to(device)")
    if bias is not None and (bias.shape != (n,) or bias.device != x.device):
        raise ValueError(f"packed_linear: bias must be a [{n}] tensor on {x.device}, got {tuple(bias.shape)} on "
                         f"{bias.device}")


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"packed_linear: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def explain(x: torch.Tensor, layout: Layout) -> dict[str, str]:
    """Every backend's answer for these inputs: 'ok' or why it cannot run them (in `auto` order, then the
    opt-in backends this layout has)."""
    kernels = type(layout).kernels()
    out = {}
    for name in (*AUTO_ORDER, *(b for b in OPT_IN if b in kernels)):
        kernel = kernels.get(name)
        out[name] = (f"the {layout.KIND} layout has no {name} kernel" if kernel is None
                     else kernel.supports(x, layout) or "ok")
    return out


_warned_fallback = False


def select_kernel(x: torch.Tensor, layout: Layout, backend: str = "auto") -> Kernel:
    """The kernel that runs `x` against `layout` for `backend` (see module docstring).

    Runs on every call (inside the op, so also under torch.compile): a handful of Python checks,
    microseconds next to a kernel that streams the weight."""
    _check_backend(backend)
    kernels = type(layout).kernels()
    op = f"packed_linear[{layout.KIND}]"
    if backend != "auto":
        kernel = kernels.get(backend)
        if kernel is None:
            raise ValueError(f"{op}: backend={backend!r} requested but the {layout.KIND} layout has no {backend} "
                             f"kernel (it has: {', '.join(kernels)}); use backend='auto'")
        why = kernel.supports(x, layout)
        if why:
            raise ValueError(f"{op}: backend={backend!r} requested but {why}; use backend='auto'")
        return kernel
    for name in AUTO_ORDER:
        kernel = kernels.get(name)
        if kernel is not None and kernel.supports(x, layout) is None:
            if name == "reference" and x.device.type != "cpu":
                _warn_fallback(x, layout)
            return kernel
    raise ValueError(f"{op}: no backend can run these inputs: {explain(x, layout)}")


def _warn_fallback(x: torch.Tensor, layout: Layout) -> None:
    """An accelerator tensor on the reference unpacks the whole weight on every call: say so, once per process."""
    global _warned_fallback
    if not _warned_fallback:
        _warned_fallback = True
        skipped = {k: v for k, v in explain(x, layout).items() if k != "reference"}
        log.warning("packed_linear[%s]: a %s tensor runs the reference (the weight is unpacked to fp32 on every "
                    "call: slow); why no kernel ran: %s. Shown once per process.", layout.KIND, x.device.type, skipped)


# ------------------------------------------------------------------------------------------- custom op
def layout_spec(layout: Layout) -> str:
    """The non-tensor part of a layout as a string constant of the op: kind, shape, fields, attributes."""
    return json.dumps({"kind": layout.KIND, "shape": list(layout.shape), "fields": list(layout.tensors()),
                       "attrs": layout.attrs()}, sort_keys=True)


@functools.lru_cache(maxsize=4096)
def _parse_spec(spec: str) -> tuple[str, tuple[int, int], tuple[str, ...], dict]:
    d = json.loads(spec)
    return d["kind"], tuple(d["shape"]), tuple(d["fields"]), d["attrs"]


def layout_from_spec(spec: str, tensors: list[torch.Tensor]) -> Layout:
    kind, shape, names, attrs = _parse_spec(spec)
    cls = LAYOUTS.get(kind)  # looked up on every call: a kind defined again (a reload) takes effect at once
    if cls is None:
        raise ValueError(f"packed_linear: unknown layout kind {kind!r}; known: {', '.join(LAYOUTS)}")
    return cls.from_tensors(shape, dict(zip(names, tensors)), attrs)


def _run(x: torch.Tensor, tensors: list[torch.Tensor], bias: torch.Tensor | None, spec: str,
         backend: str) -> torch.Tensor:
    layout = layout_from_spec(spec, tensors)
    check_inputs(x, layout, bias)
    return select_kernel(x, layout, backend).fn(x, layout, bias)


def _op_impl(x: torch.Tensor, tensors: list[torch.Tensor], bias: torch.Tensor | None, spec: str,
             backend: str) -> torch.Tensor:
    out = _run(x, tensors, bias, spec, backend)
    # a custom op's output may not alias its inputs; a kernel that returned a view of one would break autograd
    return out if all(out.data_ptr() != t.data_ptr() for t in (x, *tensors)) else out.clone()


@torch.library.custom_op("sparsekit::packed_linear", mutates_args=())
def _packed_linear_op(x: torch.Tensor, tensors: list[torch.Tensor], bias: torch.Tensor | None, spec: str,
                      backend: str) -> torch.Tensor:
    # Once sparsekit._cpu is loaded, its C++ kernel serves this op for CPU tensors (csrc/cpu/binding.cpp: no
    # Python frame per call in a compiled graph) and hands what it does not serve to packed_linear_py below.
    return _op_impl(x, tensors, bias, spec, backend)


@torch.library.custom_op("sparsekit::packed_linear_py", mutates_args=())
def _packed_linear_py(x: torch.Tensor, tensors: list[torch.Tensor], bias: torch.Tensor | None, spec: str,
                      backend: str) -> torch.Tensor:
    """The Python implementation of sparsekit::packed_linear, for the C++ CPU kernel to hand cases back to."""
    return _op_impl(x, tensors, bias, spec, backend)


@_packed_linear_op.register_fake
def _packed_linear_fake(x: torch.Tensor, tensors: list[torch.Tensor], bias: torch.Tensor | None, spec: str,
                        backend: str) -> torch.Tensor:
    layout = layout_from_spec(spec, tensors)
    check_inputs(x, layout, bias)  # the same errors at trace time (and for meta tensors) as when running
    return x.new_empty((*x.shape[:-1], layout.shape[0]))


def _setup_context(ctx, inputs, output) -> None:
    x, tensors, bias, spec, backend = inputs
    ctx.save_for_backward(*tensors)
    ctx.spec = spec
    ctx.x_dtype = x.dtype


def _backward(ctx, grad: torch.Tensor):
    """d out / d x = grad @ W (the dense weight the layout encodes, fp32 as in the reference); the packed
    tensors and the bias are constants (nothing trains a packed weight), so they get no gradient."""
    weight = layout_from_spec(ctx.spec, list(ctx.saved_tensors)).unpack()
    grad_x = (grad.float() @ weight.float()).to(ctx.x_dtype)
    return grad_x, [None] * len(ctx.saved_tensors), None, None, None


# without it a compiled model would refuse to run with gradients enabled (the default), e.g. for an
# attribution pass through a converted model
_packed_linear_op.register_autograd(_backward, setup_context=_setup_context)


def packed_linear_op(x: torch.Tensor, tensors: list[torch.Tensor], bias: torch.Tensor | None, spec: str,
                     backend: str = "auto") -> torch.Tensor:
    """The custom op (what `sparsekit.nn.PackedLinear.forward` calls with its buffers).

    Traced (torch.compile, torch.export) it is the op `sparsekit::packed_linear`. In eager mode without
    gradients: on the CPU with sparsekit._cpu built, the op too (its C++ kernel, csrc/cpu/binding.cpp, is
    ~10 us a call cheaper than the Python selection); elsewhere the Python implementation directly,
    skipping the dispatcher hop into torch.library's Python kernel (~20 us a call)."""
    if torch.compiler.is_compiling() or (torch.is_grad_enabled() and x.requires_grad) or _cpp_serves(x, spec):
        return torch.ops.sparsekit.packed_linear(x, tensors, bias, spec, backend)
    return _run(x, tensors, bias, spec, backend)


def _cpp_serves(x: torch.Tensor, spec: str) -> bool:
    """The op's C++ CPU kernel runs this call itself (else it would hand it back: two hops instead of none)."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and _parse_spec(spec)[0] in CPP_KINDS
            and _ext.cpu_available())


def packed_linear(x: torch.Tensor, layout: Layout, bias: torch.Tensor | None = None, *,
                  backend: str = "auto") -> torch.Tensor:
    """`x` (`[..., K]`) times the packed `[N, K]` weight, transposed; returns `[..., N]` in x's dtype.
    (The op checks the inputs and the backend: errors name the constraint.)"""
    return packed_linear_op(x, list(layout.tensors().values()), bias, layout_spec(layout), backend)


__all__ = ["ACTIVATION_DTYPES", "check_inputs", "explain", "layout_from_spec", "layout_spec", "packed_linear",
           "packed_linear_op", "packed_linear_reference", "select_kernel"]
