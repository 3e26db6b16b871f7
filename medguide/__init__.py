"""medguide: MONAI bundles for multimodal medical imaging methods that use a superior modality in training.

The subpackages are imported here so that a bundle config needs only ``$import medguide`` to use
``medguide.data.…`` in its expressions (MONAI binds ``import a.b`` under the name ``a.b``, not ``a``).
"""

from medguide import data, engines, losses, metrics, networks, transforms

__version__ = "0.1.0"

__all__ = ["data", "engines", "losses", "metrics", "networks", "transforms", "__version__"]
