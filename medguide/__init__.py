"""medguide: MONAI bundles for multimodal medical imaging methods that use a superior modality in training.

The subpackages load on first use (``medguide.data``, ``medguide.engines``, ...), so a bundle config needs only
``$import medguide`` to use ``medguide.data.…`` in its expressions (MONAI binds ``import a.b`` under the name
``a.b``, not ``a``), while ``medguide --help`` answers without importing torch and MONAI.
"""

import importlib

__version__ = "0.1.0"

_SUBPACKAGES = ("cli", "data", "engines", "losses", "metrics", "networks", "transforms", "visualize")

__all__ = ["data", "engines", "losses", "metrics", "networks", "transforms", "__version__"]


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"medguide.{name}")
    raise AttributeError(f"module 'medguide' has no attribute {name!r}")
