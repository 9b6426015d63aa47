"""Evaluation: 2D detection (AP50, COCO mAP, KITTI AP|R40), depth (Eigen metrics), BEV
(centre-distance mAP, occupancy IoU), the dataset runner and the report of ``perception eval``.

One module per concept: :mod:`.detection`, :mod:`.depth`, :mod:`.bev`, :mod:`.runner` (the
evaluation loop), :mod:`.predictors` (the model stage), :mod:`.datasets`, :mod:`.options`,
:mod:`.report`. Definitions are in docs/evaluation.md.
"""

from perception.eval.bev import BevEvaluator, BevObjects, center_distance_ap, merge_objects, occupancy_iou
from perception.eval.depth import DepthEvaluator, eigen_metrics
from perception.eval.detection import DetectionEvaluator, ImageDetections, ap50, coco_ap, kitti_ap_r40
from perception.eval.report import write_metrics, write_report
from perception.eval.datasets import open_dataset
from perception.eval.options import EvalError, EvalOptions
from perception.eval.predictors import Prediction, TeacherPredictor, as_predictor, make_backend_predictor, \
    onnx_file_predictor
from perception.eval.runner import Evaluation, evaluate

__all__ = ["BevEvaluator", "BevObjects", "center_distance_ap", "merge_objects", "occupancy_iou", "DepthEvaluator",
           "eigen_metrics", "DetectionEvaluator", "ImageDetections", "ap50", "coco_ap", "kitti_ap_r40",
           "write_metrics", "write_report", "EvalError", "EvalOptions", "Evaluation", "Prediction", "as_predictor",
           "evaluate", "make_backend_predictor", "onnx_file_predictor", "open_dataset",
           "TeacherPredictor"]
