"""Agreement with a reference detector on video without labels.

A dashcam clip has no ground truth, but a strong COCO detector (the YOLOX teacher of
:mod:`perception.train.teacher`) finds the obvious cars. The question users care about is
"does our model find the cars that are plainly there?": over the camera images where the
reference finds a car with ``score >= ref_score`` and box height ``>= min_height`` px (in the
original image), the fraction where our model has a car box with ``score >= score`` overlapping
one of those reference cars with IoU ``>= iou``. Box-level recall of those reference cars is
reported too. Reference boxes less than half inside the evaluated crop are not counted (the
network never sees them).

The other direction, boxes of ours that the reference does not explain (false or merged boxes):
our *vehicle* boxes (car, truck, bus) with ``score >= score`` and at least half inside the crop
that overlap no reference vehicle (car, truck or bus with ``score >= vehicle_ref_score``, at least
half inside the crop, clipped to it) with IoU ``>= iou``, per image; also only for our boxes at
least ``min_height`` px tall. The classes need not agree (our truck on the reference's car matches).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perception.eval.detection import box_ioa, box_iou


@dataclass
class AgreementCounter:
    """Accumulates the car-finding agreement with a reference detector and our vehicle boxes it
    does not explain (see module docstring)."""

    ref_score: float = 0.5
    min_height: float = 40.0
    score: float = 0.3
    iou: float = 0.5
    images: int = 0
    images_with_ref_car: int = 0
    images_found: int = 0
    ref_cars: int = 0
    ref_cars_found: int = 0
    pred_cars: int = 0
    vehicle_ref_score: float = 0.3
    vehicle_images: int = 0
    pred_vehicles: int = 0
    unmatched_vehicles: int = 0
    unmatched_vehicles_tall: int = 0

    def add(self, pred_boxes: np.ndarray, pred_scores: np.ndarray, pred_is_car: np.ndarray,
            ref_boxes: np.ndarray, ref_scores: np.ndarray, ref_is_car: np.ndarray,
            window: np.ndarray | None = None, *, pred_is_vehicle: np.ndarray | None = None,
            ref_is_vehicle: np.ndarray | None = None) -> bool | None:
        """One camera image, all boxes in original pixels. Returns whether a reference car was
        found (None when the reference has no qualifying car in this image). With both vehicle
        masks the image also counts for the unmatched vehicle boxes (pass the reference's boxes
        down to ``vehicle_ref_score`` for that)."""
        self.images += 1
        if pred_is_vehicle is not None and ref_is_vehicle is not None:
            counted, matched = self.match_vehicles(pred_boxes, pred_scores, pred_is_vehicle, ref_boxes, ref_scores,
                                                   ref_is_vehicle, window)
            pb = np.asarray(pred_boxes, np.float64).reshape(-1, 4)
            tall = pb[:, 3] - pb[:, 1] >= self.min_height
            self.vehicle_images += 1
            self.pred_vehicles += int(counted.sum())
            self.unmatched_vehicles += int((counted & ~matched).sum())
            self.unmatched_vehicles_tall += int((counted & ~matched & tall).sum())
        ref_boxes = np.asarray(ref_boxes, np.float64).reshape(-1, 4)
        h = ref_boxes[:, 3] - ref_boxes[:, 1]
        keep = np.asarray(ref_is_car, bool) & (np.asarray(ref_scores) >= self.ref_score) & (h >= self.min_height)
        if window is not None:
            keep &= box_ioa(ref_boxes, np.asarray(window, np.float64))[:, 0] >= 0.5
        ref = ref_boxes[keep]
        pred = np.asarray(pred_boxes, np.float64).reshape(-1, 4)[
            np.asarray(pred_is_car, bool) & (np.asarray(pred_scores) >= self.score)]
        self.pred_cars += len(pred)
        if len(ref) == 0:
            return None
        self.images_with_ref_car += 1
        self.ref_cars += len(ref)
        matched = (box_iou(ref, pred) >= self.iou).any(axis=1) if len(pred) else np.zeros(len(ref), bool)
        self.ref_cars_found += int(matched.sum())
        found = bool(matched.any())
        self.images_found += int(found)
        return found

    def match_vehicles(self, pred_boxes: np.ndarray, pred_scores: np.ndarray, pred_is_vehicle: np.ndarray,
                       ref_boxes: np.ndarray, ref_scores: np.ndarray, ref_is_vehicle: np.ndarray,
                       window: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Masks over our boxes: (counted: a vehicle with ``score >= score`` at least half inside
        ``window``; matched: IoU ``>= iou`` with a reference vehicle), by the rule of the module
        docstring. Stateless: also for drawing which boxes are unmatched."""
        pred = np.asarray(pred_boxes, np.float64).reshape(-1, 4)
        ref = np.asarray(ref_boxes, np.float64).reshape(-1, 4)
        counted = np.asarray(pred_is_vehicle, bool) & (np.asarray(pred_scores) >= self.score)
        keep = np.asarray(ref_is_vehicle, bool) & (np.asarray(ref_scores) >= self.vehicle_ref_score)
        if window is not None:
            win = np.asarray(window, np.float64).reshape(4)
            counted &= box_ioa(pred, win)[:, 0] >= 0.5
            keep &= box_ioa(ref, win)[:, 0] >= 0.5
            ref = np.clip(ref, win[[0, 1, 0, 1]], win[[2, 3, 2, 3]])
        ref = ref[keep]
        matched = (box_iou(pred, ref) >= self.iou).any(axis=1) if len(ref) else np.zeros(len(pred), bool)
        return counted, matched

    def compute(self) -> dict[str, float | int | None]:
        def per_image(n: int) -> float | None:  # None when no image had the vehicle masks
            return round(n / self.vehicle_images, 3) if self.vehicle_images else None

        return {
            "car_found_rate": (self.images_found / self.images_with_ref_car) if self.images_with_ref_car else None,
            "car_recall": (self.ref_cars_found / self.ref_cars) if self.ref_cars else None,
            "images": self.images,
            "images_with_reference_car": self.images_with_ref_car,
            "reference_cars": self.ref_cars,
            "predicted_cars_per_image": round(self.pred_cars / max(self.images, 1), 3),
            "vehicle_boxes_per_image": per_image(self.pred_vehicles),
            "unmatched_vehicle_boxes_per_image": per_image(self.unmatched_vehicles),
            "unmatched_vehicle_boxes_per_image_40px": per_image(self.unmatched_vehicles_tall),
            "rule": {"reference_score": self.ref_score, "reference_min_height_px": self.min_height,
                     "score": self.score, "iou": self.iou, "vehicle_reference_score": self.vehicle_ref_score},
        }
