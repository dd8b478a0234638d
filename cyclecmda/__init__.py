"""cyclecmda: CycleGAN translators between unpaired image modalities, exported as augmentations."""

__version__ = "0.1.0"

from cyclecmda.errors import ConfigError, CycleCMDAError, DataError

__all__ = ["__version__", "ConfigError", "CycleCMDAError", "DataError"]
