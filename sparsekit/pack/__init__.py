"""Storage layouts; every pack has an unpack that round-trips exactly."""

from sparsekit.pack.bitmask import pack_mask, unpack_mask

__all__ = ["pack_mask", "unpack_mask"]
