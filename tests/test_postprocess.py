"""Decoding raw head outputs and class-aware NMS, on hand-worked cases."""

from __future__ import annotations

import math

import torch

from perception.nn.heads import det_channels, det_layout
from perception.nn.postprocess import decode_detections, make_anchors, nms_class_aware, select_detections


def _inv_softplus(y: float) -> float:
    return math.log(math.expm1(y))


def test_anchor_layout_matches_feature_maps():
    pts, strides = make_anchors(64, 96, (8, 16, 32))
    assert len(pts) == 8 * 12 + 4 * 6 + 2 * 3
    assert torch.equal(pts[0], torch.tensor([4.0, 4.0]))
    assert torch.equal(pts[1], torch.tensor([12.0, 4.0]))  # row-major: x first
    assert strides[8 * 12].item() == 16 and strides[-1].item() == 32


def test_decode_one_hand_worked_anchor():
    nc = 5
    lay = det_layout(nc)
    pts, strides = make_anchors(64, 96, (8, 16, 32))
    det = torch.zeros(1, len(pts), det_channels(nc))
    a = 13  # stride 8, row 1, col 1: anchor at (12, 12)
    det[0, a, lay["ltrb"]] = torch.tensor([_inv_softplus(1.0), _inv_softplus(0.5), _inv_softplus(2.0),
                                           _inv_softplus(1.5)])
    det[0, a, lay["offset"]] = torch.tensor([0.5, -0.25])
    det[0, a, lay["depth"]] = math.log(10.0)
    det[0, a, lay["size"]] = torch.log(torch.tensor([4.0, 2.0, 1.5]))
    det[0, a, lay["angle"]] = torch.tensor([0.0, 1.0])  # alpha = 0
    K = torch.tensor([[[100.0, 0, 48], [0, 100.0, 32], [0, 0, 1]]])
    out = decode_detections(det, pts, strides, nc, K, f_ref=50.0)
    assert torch.allclose(out["boxes"][0, a], torch.tensor([12 - 8.0, 12 - 4.0, 12 + 16.0, 12 + 12.0]), atol=1e-4)
    depth = 10.0 * 100.0 / 50.0  # canonical depth rescaled by fx / f_ref
    u, v = 12 + 0.5 * 8, 12 - 0.25 * 8
    expect = torch.tensor([(u - 48) / 100 * depth, (v - 32) / 100 * depth, depth])
    assert torch.allclose(out["center_cam"][0, a], expect, atol=1e-4)
    assert torch.allclose(out["size"][0, a], torch.tensor([4.0, 2.0, 1.5]), atol=1e-5)
    # yaw = alpha + ray angle atan2(x, z)
    assert math.isclose(out["yaw"][0, a].item(), math.atan2(expect[0].item(), depth), abs_tol=1e-5)


def test_nms_suppresses_same_class_only():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 1, 0])
    keep = nms_class_aware(boxes, scores, labels, iou_thresh=0.5)
    assert keep.tolist() == [0, 2, 3]


def test_select_clips_to_image_and_respects_threshold():
    decoded = {
        "boxes": torch.tensor([[[-5.0, -5.0, 20.0, 20.0], [0, 0, 5, 5]]]),
        "scores": torch.tensor([[[0.9, 0.0], [0.1, 0.2]]]),
        "center_cam": torch.zeros(1, 2, 3), "size": torch.ones(1, 2, 3), "yaw": torch.zeros(1, 2),
    }
    (dets,) = select_detections(decoded, (16, 16), score_thresh=0.25, iou_thresh=0.5, classes=("a", "b"))
    assert len(dets) == 1
    assert dets.boxes.tolist() == [[0.0, 0.0, 16.0, 16.0]]
    assert dets.label_names == ["a"]
