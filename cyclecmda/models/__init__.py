"""Generator and discriminator registries: ``create_generator("resnet_9blocks", ...)``."""

from cyclecmda.models.discriminators import (
    DISCRIMINATORS,
    create_discriminator,
    list_discriminators,
    register_discriminator,
)
from cyclecmda.models.generators import GENERATORS, create_generator, list_generators, register_generator

__all__ = [
    "DISCRIMINATORS",
    "GENERATORS",
    "create_discriminator",
    "create_generator",
    "list_discriminators",
    "list_generators",
    "register_discriminator",
    "register_generator",
]
