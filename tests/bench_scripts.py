"""bench/ scripts as modules: they are run as files (not a package), so tests load them by path."""

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str, folder: str = "experiments") -> ModuleType:
    """bench/<folder>/<name>.py as a module (e.g. its `table` function prints a README table)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
