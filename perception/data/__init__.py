"""Data: the `Sample` type, class table, synthetic world and dataset readers."""

from perception.data.classes import CLASS_MAP, CLASSES, map_class
from perception.data.sample import Boxes2D, Boxes3D, Sample

__all__ = ["CLASSES", "CLASS_MAP", "map_class", "Boxes2D", "Boxes3D", "Sample"]
