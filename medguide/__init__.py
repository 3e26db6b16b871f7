"""medguide: MONAI bundles for multimodal medical imaging methods that use a superior modality in training."""

__version__ = "0.1.0"
