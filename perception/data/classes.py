"""The class list and the one table that maps dataset names onto it (DESIGN.md section 2)."""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("car", "truck", "bus", "pedestrian", "cyclist")

# name in a source dataset -> our class name; names not listed are ignored.
CLASS_MAP: dict[str, dict[str, str]] = {
    "coco": {"car": "car", "truck": "truck", "bus": "bus", "person": "pedestrian",
             "bicycle": "cyclist", "motorcycle": "cyclist"},
    "kitti": {"Car": "car", "Van": "car", "Truck": "truck", "Tram": "bus",
              "Pedestrian": "pedestrian", "Person_sitting": "pedestrian", "Cyclist": "cyclist"},
    "nuscenes": {"car": "car", "truck": "truck", "trailer": "truck", "construction_vehicle": "truck",
                 "bus": "bus", "pedestrian": "pedestrian", "bicycle": "cyclist", "motorcycle": "cyclist"},
}


def map_class(dataset: str, name: str, classes: tuple[str, ...] = CLASSES) -> int | None:
    """Index of a dataset's class name in ``classes``, or None when it is not one of ours."""
    ours = CLASS_MAP[dataset].get(name)
    if ours is None or ours not in classes:
        return None
    return classes.index(ours)
