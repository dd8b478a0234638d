"""Trained translators as augmentations: albumentations and torchvision ``transforms.v2`` flavours.

    import albumentations as A
    from cyclecmda.augment import CycleGANTranslate

    aug = A.Compose([A.RandomCrop(256, 256), CycleGANTranslate("exports/v2ir/a2b", p=0.5), A.HorizontalFlip()])
"""

from cyclecmda.augment.albu import CycleGANTranslate, SynthesizeModality
from cyclecmda.augment.modalities import CrossModalMixup, ModalityDropout
from cyclecmda.augment.multimodal import MultiModalCompose, Synthesis
from cyclecmda.augment.tv import CycleGANTranslateV2
from cyclecmda.export.artifact import ArtifactError, TranslatorArtifact, load_artifact

__all__ = [
    "ArtifactError",
    "CrossModalMixup",
    "CycleGANTranslate",
    "CycleGANTranslateV2",
    "ModalityDropout",
    "MultiModalCompose",
    "SynthesizeModality",
    "Synthesis",
    "TranslatorArtifact",
    "load_artifact",
]
