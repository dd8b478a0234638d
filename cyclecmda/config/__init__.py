"""The run configuration: its schema (``schema``: dataclasses and their defaults), the checks of its
values (``checks``), and loading it from YAML files and ``key=value`` overrides (``loading``)."""

from cyclecmda.config.checks import validate
from cyclecmda.config.loading import OVERRIDES, config_from_dict, load_config, save_config, split_cli_args, to_dict, to_yaml
from cyclecmda.config.schema import (
                                      CHOICES,
                                      IMAGE_EXTENSIONS,
                                      PSEUDO_LABEL_VIEWS,
                                      Config,
                                      DataConfig,
                                      DiscConfig,
                                      DomainConfig,
                                      GenConfig,
                                      LossConfig,
                                      ModelConfig,
                                      OptimConfig,
                                      RunConfig,
                                      ScaleConfig,
                                      SemanticConfig,
                                      TaskConfig,
                                      TrainConfig,
                                      TransformConfig,
                                      default_views,
)

__all__ = ["CHOICES", "IMAGE_EXTENSIONS", "OVERRIDES", "PSEUDO_LABEL_VIEWS", "Config", "DataConfig", "DiscConfig",
           "DomainConfig", "GenConfig", "LossConfig", "ModelConfig", "OptimConfig", "RunConfig", "ScaleConfig",
           "SemanticConfig", "TaskConfig", "TrainConfig", "TransformConfig", "config_from_dict", "load_config",
           "default_views", "save_config", "split_cli_args", "to_dict", "to_yaml", "validate"]
