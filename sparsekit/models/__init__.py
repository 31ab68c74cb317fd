"""Model loading and architecture adapters."""

from sparsekit.models.adapters import ARCHITECTURES, ROLE_GROUP, Adapter, ArchSpec, get_adapter, register_architecture
from sparsekit.models.loader import SHORT_NAMES, load_model

__all__ = ["ARCHITECTURES", "ROLE_GROUP", "Adapter", "ArchSpec", "SHORT_NAMES", "get_adapter", "load_model",
           "register_architecture"]
