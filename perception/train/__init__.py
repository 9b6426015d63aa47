"""Training: losses, task-aligned assigner, K-consistent augmentation, the training loop."""

from perception.train.config import TrainConfig
from perception.train.trainer import train

__all__ = ["TrainConfig", "train"]
