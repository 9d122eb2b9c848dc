"""Optional dependency groups ("extras") and the one message for a missing one.

The CPU pipeline needs none of them. ``lerobot`` (LeRobot with torch: loading, training, publishing the
dataset) and ``gpu`` (transformers + torch for the GPU model backends) are installed with
``pip install 'ego-assets[lerobot]'`` / ``make setup EXTRAS=lerobot`` (``EXTRAS="lerobot gpu"`` for both).
Code that needs one imports it inside the function and calls ``require`` first, so a missing extra is a
clear error naming it instead of a bare ImportError deep in a stack.
"""

from __future__ import annotations

import importlib.util

EXTRAS = {
    "lerobot": "LeRobot 0.6 and torch: load, train and publish the dataset",
    "gpu": "transformers and torch: the GPU model backends (depthpro)",
    "synthetic": "scikit-image: the sample images that texture the synthetic renderer (tests, benchmarks)",
}


class MissingExtraError(ImportError):
    """A feature needs an optional dependency group that is not installed."""


def has_module(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def install_hint(extra: str) -> str:
    return f"pip install 'ego-assets[{extra}]' (in a checkout: make setup EXTRAS={extra})"


def require(module: str, extra: str, purpose: str) -> None:
    """Raise ``MissingExtraError`` naming the extra when ``module`` is not installed."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    if not has_module(module):
        raise MissingExtraError(f"{purpose} needs {module!r}, which comes with the {extra!r} extra "
                                f"({EXTRAS[extra]}): {install_hint(extra)}")
