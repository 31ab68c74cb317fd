"""Backends of the packed ops, one file each; importing a file registers its kernels on the layouts.

`reference` (every layout: unpack, then a matmul), `triton` (the plain layouts, `sparsekit.kernels`),
`cuda` (the mma.sp-order layouts, `sparsekit._C`), `cpu` (the plain layouts, `sparsekit._cpu`), and the
opt-in `torch_cpu` (torch's weight-only CPU kernels for int8 / int4). None of them imports Triton or the extension here:
a kernel module is imported on the first call that runs it. A new backend is one file here, its name
in `sparsekit.ops._dispatch.BACKENDS` (where it sits in the `auto` order), and the import below.
"""

from sparsekit.ops.backends import cpu, cuda, reference, torch_cpu, triton  # noqa: F401  (registration)
