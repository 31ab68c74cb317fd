"""Triton kernels, installed as `sparsekit.kernels`, one file per kernel family.

Importing this package does not import Triton; each kernel module does, and is imported only by the
`triton` backend of the op that uses it (`sparsekit.ops`).
"""
