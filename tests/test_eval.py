"""Evaluation: metrics against hand-worked cases and a COCO reference, the runner's plumbing on
the shared nuScenes keyframe (ground truth fed back as predictions), and `perception eval`."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from perception.cli import app
from perception.eval.bev import (BevEvaluator, BevObjects, OccupancyGrid, center_distance_ap, merge_objects,
                                 occupancy_from_points, occupancy_iou)
from perception.eval.depth import DepthEvaluator, eigen_metrics
from perception.eval.detection import (COCO_AREA_RANGES, DetectionEvaluator, ImageDetections, ap50, coco_ap,
                                       kitti_ap_r40)

runner = CliRunner()
CLS = ("car", "truck", "bus", "pedestrian", "cyclist")


def img(gt, gl, det, sc, dl, **kw) -> ImageDetections:
    return ImageDetections(np.asarray(gt, float).reshape(-1, 4), gl, np.asarray(det, float).reshape(-1, 4), sc, dl, **kw)


A, B, FAR = [0, 0, 50, 50], [100, 0, 150, 50], [300, 300, 350, 350]  # 50 px tall boxes


# ---------------------------------------------------------------------------- detection
def test_ap50_hand_worked_two_gt_three_predictions():
    # scores 0.9 (TP), 0.8 (FP), 0.7 (TP): recall 0.5, 0.5, 1; precision 1, 0.5, 2/3.
    # Interpolated precision is 1 for recall <= 0.5 (51 of the 101 points) and 2/3 above (50).
    im = img([A, B], [0, 0], [A, FAR, B], [0.9, 0.8, 0.7], [0, 0, 0])
    assert ap50([im], 1)[0] == pytest.approx((51 + 50 * 2 / 3) / 101)
    # KITTI R40 (IoU > 0.7): thresholds 0.9 (precision 1) for recall 1/40..20/40, 0.7 (2/3) above
    assert kitti_ap_r40([im], ("car",))["car"]["easy"] == pytest.approx((20 + 20 * 2 / 3) / 40)
    # the same ranking with the false positive first ranks worse
    worse = img([A, B], [0, 0], [A, FAR, B], [0.8, 0.9, 0.7], [0, 0, 0])
    assert ap50([worse], 1)[0] < ap50([im], 1)[0]


def test_perfect_detector_scores_one_and_wrong_detector_zero():
    gts = [[10 * i, 0, 10 * i + 60, 60] for i in range(3)]
    im = img(gts, [0, 3, 0], gts, [0.9, 0.8, 0.7], [0, 3, 0])
    ev = DetectionEvaluator(CLS)
    ev.add(im)
    m = ev.compute()
    assert m["ap50"]["car"] == 1.0 and m["ap50"]["pedestrian"] == 1.0 and m["ap50"]["truck"] is None
    assert m["map50"] == 1.0 and m["coco_map"] == 1.0
    assert m["kitti_ap_r40"]["car"] == {"easy": 1.0, "moderate": 1.0, "hard": 1.0}
    # right boxes, wrong class / wrong place: all zero
    wrong = img(gts, [0, 3, 0], [FAR, [400, 400, 450, 450], FAR], [0.9, 0.8, 0.7], [0, 0, 3])
    ev = DetectionEvaluator(CLS)
    ev.add(wrong)
    m = ev.compute()
    assert m["ap50"]["car"] == 0.0 and m["ap50"]["pedestrian"] == 0.0 and m["coco_map"] == 0.0
    assert m["kitti_ap_r40"]["car"]["moderate"] == 0.0


def test_coco_map_averages_iou_thresholds():
    # one detection shifted to IoU 0.8 with its GT: a TP for t <= 0.8 (7 of 10 thresholds)
    det = [0, 0, 50, 40]  # IoU = 40*50 / 50*50 = 0.8
    res = coco_ap([img([A], [0], [det], [0.9], [0])], 1)
    assert res["ap"][0, :7] == pytest.approx(np.ones(7)) and res["ap"][0, 7:] == pytest.approx(np.zeros(3))
    assert np.mean(res["ap"][0]) == pytest.approx(0.7)


def test_kitti_difficulty_height_occlusion_truncation():
    short = [200, 0, 230, 30]  # 30 px high: Moderate/Hard (>= 25) but not Easy (>= 40)
    only_short = img([short], [0], [short], [0.9], [0])
    r = kitti_ap_r40([only_short], ("car",))["car"]
    assert math.isnan(r["easy"]) and r["moderate"] == 1.0 and r["hard"] == 1.0
    # a missed 30 px car is no false negative for Easy, but halves the recall of Moderate
    missed_short = img([A, short], [0, 0], [A], [0.9], [0])
    r = kitti_ap_r40([missed_short], ("car",))["car"]
    assert r["easy"] == 1.0 and r["moderate"] == pytest.approx(0.5)
    # occlusion 1 -> Moderate and Hard; occlusion 2 / truncation 0.4 -> Hard only
    for occ, trunc, expect in ((1, 0.0, (False, True, True)), (2, 0.0, (False, False, True)),
                               (0, 0.4, (False, False, True)), (3, 0.0, (False, False, False))):
        r = kitti_ap_r40([img([A], [0], [], [], [], gt_occlusion=[occ], gt_truncation=[trunc])], ("car",))["car"]
        assert [not math.isnan(r[d]) for d in ("easy", "moderate", "hard")] == list(expect), (occ, trunc)


def test_kitti_min_overlap_per_class():
    det = [0, 0, 32, 50]  # IoU 0.64 with A: enough for a pedestrian (0.5), not for a car (0.7)
    r = kitti_ap_r40([img([A], [0], [det], [0.9], [0])], ("car",))["car"]
    assert r["easy"] == 0.0
    r = kitti_ap_r40([img([A], [0], [det], [0.9], [0])], ("pedestrian",))["pedestrian"]
    assert r["easy"] == 1.0


def test_ignore_regions_do_not_create_false_positives():
    dontcare = [290, 290, 360, 360]  # contains FAR
    base = dict(gt=[A], det=[A, FAR], sc=[0.6, 0.9], dl=[0, 0])
    without = img(base["gt"], [0], base["det"], base["sc"], base["dl"])
    with_dc = img([A, dontcare], [0, -1], base["det"], base["sc"], base["dl"], gt_ignore=[False, True])
    assert ap50([without], 1)[0] < 0.99
    assert ap50([with_dc], 1)[0] == pytest.approx(1.0)
    assert kitti_ap_r40([without], ("car",))["car"]["easy"] < 0.99
    assert kitti_ap_r40([with_dc], ("car",))["car"]["easy"] == pytest.approx(1.0)
    # an ignored object of the class: detecting it is not a false positive, missing it is no miss
    ign_obj = img([A, FAR], [0, 0], [A, FAR], [0.6, 0.9], [0, 0], gt_ignore=[False, True])
    assert ap50([ign_obj], 1)[0] == pytest.approx(1.0)
    assert coco_ap([ign_obj], 1)["num_gt"][0] == 1
    missed = img([A, FAR], [0, 0], [A], [0.6], [0], gt_ignore=[False, True])
    assert ap50([missed], 1)[0] == pytest.approx(1.0)
    assert kitti_ap_r40([missed], ("car",))["car"]["easy"] == pytest.approx(1.0)


def _random_images(seed: int, n: int = 25, classes: int = 3) -> list[ImageDetections]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        G = int(rng.integers(0, 8))
        xy = rng.uniform(0, 200, (G, 2))
        g = np.c_[xy, xy + rng.uniform(5, 80, (G, 2))]
        gl = rng.integers(0, classes, G)
        keep = rng.random(G) < 0.8
        d1 = g[keep] + rng.normal(0, 4, (int(keep.sum()), 4))
        l1 = np.where(rng.random(int(keep.sum())) < 0.9, gl[keep], rng.integers(0, classes, int(keep.sum())))
        R = int(rng.integers(0, 5))
        xy2 = rng.uniform(0, 200, (R, 2))
        d = np.r_[d1, np.c_[xy2, xy2 + rng.uniform(5, 80, (R, 2))]]
        d[:, 2:] = np.maximum(d[:, 2:], d[:, :2] + 1)
        out.append(ImageDetections(g, gl, d, rng.random(len(d)), np.r_[l1, rng.integers(0, classes, R)],
                                   gt_ignore=rng.random(G) < 0.15, image_id=str(i)))
    return out


def _coco_reference_stats(images: list[ImageDetections], C: int) -> np.ndarray:
    """faster-coco-eval's 12 summary numbers (AP, AP50, AP75, AP small/medium/large, ...)."""
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        pytest.skip("faster-coco-eval is not installed (pip install -e '.[dev]'): no COCO reference to compare with")
    gt = {"images": [{"id": i + 1, "width": 300, "height": 300} for i in range(len(images))],
          "categories": [{"id": c + 1, "name": str(c)} for c in range(C)], "annotations": []}
    dts = []
    for i, im in enumerate(images):
        for b, lab, ig in zip(im.gt_boxes, im.gt_labels, im.gt_ignore):
            w, h = b[2] - b[0], b[3] - b[1]
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": int(lab) + 1,
                                      "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": int(ig)})
        for b, s, lab in zip(im.boxes, im.scores, im.labels):
            dts.append({"image_id": i + 1, "category_id": int(lab) + 1, "score": float(s),
                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    coco_gt = COCO(gt)
    E = COCOeval_faster(coco_gt, coco_gt.loadRes(dts), "bbox", print_function=lambda *a, **k: None)
    E.evaluate()
    E.accumulate()
    E.summarize()
    return np.asarray(E.stats)


def test_coco_map_matches_reference_implementation():
    images = _random_images(0)
    res = coco_ap(images, 3)
    stats = _coco_reference_stats(images, 3)
    assert np.nanmean(res["ap"].mean(1)) == pytest.approx(stats[0], abs=1e-6)
    assert np.nanmean(res["ap"][:, 0]) == pytest.approx(stats[1], abs=1e-6)
    assert 0.05 < stats[0] < 0.95  # a non-trivial case


@pytest.mark.parametrize("seed", [0, 1])
def test_coco_ap_by_area_matches_reference_implementation(seed: int):
    images = _random_images(seed, n=40)
    for im in images:                      # boxes of 10-160 px a side: areas in all three ranges
        im.gt_boxes *= 2.0
        im.boxes *= 2.0
    stats = _coco_reference_stats(images, 3)
    for k, (size, rng) in enumerate(COCO_AREA_RANGES.items()):
        res = coco_ap(images, 3, area_rng=rng)
        assert res["num_gt"].sum() > 5, size
        assert np.nanmean(res["ap"].mean(1)) == pytest.approx(stats[3 + k], abs=1e-6), size


def test_by_size_ignores_objects_of_other_sizes():
    big, tiny = [0, 0, 100, 100], [200, 200, 210, 208]
    only_big = img([big, tiny], [0, 0], [big], [0.9], [0])      # the tiny car is missed
    det = DetectionEvaluator(("car",))
    det.add(only_big)
    m = det.compute()
    assert m["ap50"]["car"] == pytest.approx(0.5, abs=0.01)     # half the cars found overall
    assert m["by_size"]["large"]["ap50"]["car"] == pytest.approx(1.0)
    assert m["by_size"]["small"]["ap50"]["car"] == pytest.approx(0.0)
    assert m["by_size"]["medium"]["ap50"]["car"] is None        # no medium car: left out
    assert m["by_size"]["small"]["num_gt"]["car"] == 1


# ---------------------------------------------------------------------------- depth
def test_eigen_metrics_hand_worked_with_median_scaling():
    gt = np.array([[2.0, 4.0], [0.0, 100.0]])      # 0 (no GT) and 100 m (> 80 m) are not scored
    pred = np.array([[1.0, 4.0], [7.0, 7.0]])
    m = eigen_metrics(pred, gt)
    assert m["abs_rel"] == pytest.approx(0.25)          # (|1-2|/2 + 0) / 2
    assert m["sq_rel"] == pytest.approx(0.25)           # (1/2 + 0) / 2
    assert m["rmse"] == pytest.approx(math.sqrt(0.5))
    assert m["rmse_log"] == pytest.approx(math.log(2) / math.sqrt(2))
    assert (m["a1"], m["a2"], m["a3"]) == (0.5, 0.5, 0.5)   # ratio 2 fails even 1.25^3 = 1.95
    s = eigen_metrics(pred, gt, median_scaling=True)
    assert s["ratio"] == pytest.approx(3.0 / 2.5)           # median(gt) / median(pred)
    assert s["abs_rel"] == pytest.approx((0.8 / 2 + 0.8 / 4) / 2)  # pred * 1.2 = [1.2, 4.8]
    assert eigen_metrics(pred, np.zeros_like(gt)) is None


def test_depth_evaluator_averages_per_image():
    ev = DepthEvaluator()
    gt = np.full((2, 2), 10.0)
    ev.update(gt + 1.0, gt)                              # rmse 1
    ev.update(np.pad(gt[:1, :1] + 3.0, ((0, 1), (0, 1)), constant_values=1.0), np.pad(gt[:1, :1], ((0, 1), (0, 1))))
    assert ev.update(gt, np.zeros_like(gt)) is None        # no valid pixel: skipped
    m = ev.compute()
    assert m["images"] == 2 and m["rmse"] == pytest.approx(2.0)   # mean of per-image RMSE 1 and 3
    assert m["abs_rel_median_scaled"] == pytest.approx(0.0)       # both are pure scale errors
    assert m["abs_rel"] > 0.05


def test_depth_errors_by_ground_truth_range():
    ev = DepthEvaluator()
    ev.update(np.array([[5.0, 30.0], [30.0, 30.0]]), np.array([[5.0, 15.0], [30.0, 60.0]]))
    ev.update(np.array([[4.0, 0.0]]), np.array([[0.0, 100.0]]))      # no valid pixel in range: ignored
    r = ev.compute()["by_range"]
    assert r["0-10"] == {"abs_rel": 0.0, "bias": 1.0, "pixels": 1}
    assert r["10-20"]["abs_rel"] == pytest.approx(1.0) and r["10-20"]["bias"] == pytest.approx(2.0)
    assert r["20-40"]["abs_rel"] == pytest.approx(0.0)
    assert r["40-80"]["abs_rel"] == pytest.approx(0.5) and r["40-80"]["bias"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------- BEV
def test_center_distance_matching_thresholds():
    gt = [BevObjects([[10.0, 0.0, 0.5]], [0])]
    near = [BevObjects([[10.7, 0.0, 0.5]], [0], [0.9])]     # 0.7 m off: a miss at 0.5 m, a hit from 1 m
    ap = center_distance_ap(near, gt, ("car",))["car"]
    assert ap["0.5"] == 0.0 and ap["1"] == ap["2"] == ap["4"] == pytest.approx(1.0)
    assert center_distance_ap([BevObjects([[10.7, 0, 0]], [1], [0.9])], gt, ("car", "truck"))["car"]["4"] == 0.0
    # greedy by score: the confident 1.5 m prediction takes the GT at 2 m; at 0.5 m only the
    # second (0.2 m) one is a hit: precision 0 -> 0.5 linearly over recall 0..1, mean 0.25
    two = [BevObjects([[11.5, 0, 0], [10.2, 0, 0]], [0, 0], [0.9, 0.5])]
    ap = center_distance_ap(two, gt, ("car",), min_recall=0.0, min_precision=0.0)["car"]
    assert ap["0.5"] == pytest.approx(0.25)
    assert ap["2"] >= 0.99
    # beyond the class range (50 m for cars) neither counts
    far_gt = [BevObjects([[60.0, 0, 0]], [0])]
    assert math.isnan(center_distance_ap([BevObjects([[60.0, 0, 0]], [0], [0.9])], far_gt, ("car",))["car"]["1"])


def test_merge_objects_across_cameras_only():
    objs = BevObjects([[10, 0, 0], [10.8, 0, 0], [10.4, 0.3, 0]], [0, 0, 3], [0.5, 0.9, 0.8], cameras=[0, 1, 0])
    m = merge_objects(objs, 1.5)
    assert sorted(m.scores.tolist()) == [0.8, 0.9]        # the 0.5 duplicate from camera 0 goes
    same_cam = BevObjects([[10, 0, 0], [10.8, 0, 0]], [0, 0], [0.5, 0.9], cameras=[0, 0])
    assert len(merge_objects(same_cam, 1.5)) == 2


def test_occupancy_from_points_and_iou():
    grid = OccupancyGrid(8, 8, 1.0)                       # ego at the centre, 1 m cells
    pts = np.array([[2.5, 0.5, 1.0],    # obstacle -> occupied (row 1, col 3)
                    [-1.5, -2.5, 0.0],  # ground -> observed, free (row 5, col 6)
                    [2.5, 0.5, 5.0],    # above 3 m: ignored
                    [30.0, 0.0, 1.0]])  # outside the grid
    occ, seen = occupancy_from_points(pts, grid)
    assert occ.sum() == 1 and occ[1, 3] and seen.sum() == 2 and seen[5, 6]
    gt = np.zeros((8, 8), bool)
    gt[1, 3] = gt[1, 4] = True
    assert occupancy_iou(occ, gt) == (1, 2)
    mask = np.zeros((8, 8), bool)
    mask[1, 3] = True
    assert occupancy_iou(occ, gt, mask) == (1, 1)          # hidden cells are not scored
    ev = BevEvaluator(("car",))
    assert ev.add_occupancy(occ, gt, np.ones((8, 8), bool), ref_occ=gt) == pytest.approx(0.5)
    out = ev.compute()
    assert out["occupancy_iou"] == 0.5 and out["occupancy_iou_gt_depth"] == 1.0


# ---------------------------------------------------------------------------- runner plumbing
class _Oracle:
    """Predicts the ground truth of the given samples (through the evaluation's preprocessing)."""

    def __init__(self, samples, size):
        from perception.data.classes import CLASSES
        from perception.eval.predictors import Prediction
        from perception.eval.runner import preprocess
        from perception.nn.postprocess import Detections

        self.classes = CLASSES
        self.frames = []
        H, W = size
        for s in samples:
            dets, depths = [], []
            for c in range(len(s.cameras)):
                p = preprocess(s, c, size, dense_depth=False)
                b = s.boxes2d[c]
                keep = b.labels >= 0
                nb = p.to_network(b.boxes[keep])
                nb[:, [0, 2]] = nb[:, [0, 2]].clip(0, W)
                nb[:, [1, 3]] = nb[:, [1, 3]].clip(0, H)
                ok = (nb[:, 2] > nb[:, 0]) & (nb[:, 3] > nb[:, 1])
                t = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
                dets.append(Detections(t(nb[ok]), torch.linspace(0.9, 0.5, int(ok.sum())),
                                       torch.as_tensor(b.labels[keep][ok]), t(b.center_cam[keep][ok]),
                                       t(b.size[keep][ok]), t(b.yaw_cam[keep][ok]), CLASSES))
                depths.append(p.depth)
            self.frames.append(Prediction(dets, torch.as_tensor(np.stack(depths))[:, None]))
        self.calls = 0

    def __call__(self, images, intrinsics):
        out = self.frames[self.calls]
        self.calls += 1
        return out


@pytest.mark.shared_data
def test_ground_truth_as_predictions_on_nuscenes_keyframe(shared_data):
    from perception.data.readers import open_nuscenes
    from perception.eval.runner import EvalOptions, evaluate

    sample = open_nuscenes(shared_data / "nuscenes_keyframe")[0]
    opts = EvalOptions(dataset="nuscenes", size=(256, 448), qualitative=2)
    oracle = _Oracle([sample], opts.size)
    ev = evaluate(oracle, [sample], opts, num_frames=1, dense_depth=False)
    m = ev.metrics
    assert oracle.calls == 1 and m["frames"] == 1
    det = m["detection"]
    assert det["num_gt"]["car"] > 5
    # the ground gate (on by default, as in `perception run`) drops one labelled object: the
    # pedestrian standing on the tail lift of the front camera's truck, 1.6 m above the road
    assert m["meta"]["ground_gate"] and m["meta"]["ground_gate_dropped"] == 1
    assert det["ap50"]["car"] == 1.0 and det["ap50"]["pedestrian"] < 1.0 and det["map50"] > 0.99
    assert det["kitti_ap_r40"]["car"]["moderate"] == 1.0
    ungated = evaluate(_Oracle([sample], opts.size), [sample], dataclasses.replace(opts, ground_gate=False),
                       num_frames=1, dense_depth=False).metrics
    assert ungated["detection"]["map50"] == 1.0 and ungated["meta"]["ground_gate_dropped"] == 0
    d = m["depth"]
    assert d["images"] == 6
    assert d["abs_rel"] < 1e-6 and d["rmse"] < 1e-4 and d["a1"] == 1.0 and d["abs_rel_median_scaled"] < 1e-6
    assert m["bev"]["center_ap"]["car"]["0.5"] == 1.0
    assert len(ev.qualitative) == 2


def test_eval_counts_only_the_detections_run_shows():
    """`perception run` drops detections floating above the ground (pipeline.lifting.GroundGate);
    evaluation does the same by default, so its figures are those of what a user sees. A
    confident "car" 3 m up in the sky of an exact prediction is dropped and counted (AP stays
    1.0); with ``ground_gate=False`` it is a false positive."""
    from helpers import fake_sample

    from perception.eval.runner import EvalOptions, evaluate
    from perception.nn.postprocess import Detections

    sample = fake_sample(3)
    results = {}
    for gate in (True, False):
        opts = EvalOptions(dataset="synth", size=(64, 96), qualitative=0, ground_gate=gate)
        oracle = _Oracle([sample], opts.size)
        d = oracle.frames[0].detections[0]
        assert len(d) >= 1
        t = lambda a: torch.tensor([a], dtype=torch.float32)  # noqa: E731
        sky = Detections(t([40.0, 4.0, 56.0, 10.0]), torch.tensor([0.99]), torch.tensor([0]),
                         t([0.0, -2.0, 10.0]), t([4.2, 1.8, 1.5]), torch.tensor([0.0]), d.classes)
        oracle.frames[0].detections[0] = Detections(*(torch.cat([getattr(d, k), getattr(sky, k)]) for k in
                                                      ("boxes", "scores", "labels", "center_cam", "size", "yaw")),
                                                    d.classes)
        results[gate] = evaluate(oracle, [sample], opts, num_frames=1, dense_depth=False).metrics
    gated, ungated = results[True], results[False]
    assert gated["meta"]["ground_gate"] and gated["meta"]["ground_gate_dropped"] == 1
    assert gated["detection"]["ap50"]["car"] == 1.0
    assert not ungated["meta"]["ground_gate"] and ungated["meta"]["ground_gate_dropped"] == 0
    assert ungated["detection"]["ap50"]["car"] < 1.0


# ---------------------------------------------------------------------------- CLI
def test_eval_cli_rejects_bad_input(tmp_path, monkeypatch):
    import perception.nn.registry as registry

    r = runner.invoke(app, ["eval", "--model", "rep-n", "--random-weights", "--dataset", "imagenet", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "unknown dataset" in r.output
    r = runner.invoke(app, ["eval", "--model", "rep-n", "--random-weights", "--dataset", "kitti", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "--data is required" in r.output
    r = runner.invoke(app, ["eval", "--model", "nope", "--dataset", "synth", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "unknown model" in r.output
    r = runner.invoke(app, ["eval", "--model", "rep-n", "--random-weights", "--dataset", "synth", "--backend", "trt",
                            "--out", str(tmp_path)])
    assert r.exit_code == 1 and "--backend must be torch, torch-train or onnx" in r.output
    monkeypatch.setattr(registry, "MODELS_DIR", tmp_path / "no-models")
    r = runner.invoke(app, ["eval", "--model", "rep-n", "--dataset", "synth", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "no shipped weights" in r.output and "--random-weights" in r.output
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.shared_data
def test_onnx_backend_gives_the_torch_metrics(shared_data, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    import perception.deploy  # noqa: F401  (registers the onnx backend with the pipeline)
    from perception.data.readers import KittiReader
    from perception.eval.predictors import make_backend_predictor
    from perception.eval.runner import EvalOptions, evaluate
    from perception.nn import create_model

    monkeypatch.setenv("PERCEPTION_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = create_model("rep-n").eval()
    opts = EvalOptions(dataset="kitti", size=(128, 416), score_thresh=0.001)
    res = {}
    for backend in ("torch", "onnx"):
        pred = make_backend_predictor(model, backend, score_thresh=opts.score_thresh, iou_thresh=0.6, max_det=100)
        samples = KittiReader(shared_data / "kitti_000008")
        res[backend] = evaluate(pred, samples, opts, num_frames=1, dense_depth=False).metrics
    assert res["onnx"]["depth"]["images"] == 1
    for k in ("abs_rel", "rmse", "a1", "abs_rel_median_scaled"):
        assert res["onnx"]["depth"][k] == pytest.approx(res["torch"]["depth"][k], rel=1e-3, abs=1e-4), k
    assert res["onnx"]["detection"]["num_gt"] == res["torch"]["detection"]["num_gt"]


def test_eval_of_an_exported_onnx_file_matches_torch(tmp_path):
    """`perception eval --model FILE.onnx`: the exported (or INT8) file evaluates like the torch model."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    from perception.deploy.export import export_onnx
    from perception.eval.datasets import open_dataset
    from perception.eval.predictors import make_backend_predictor, onnx_file_predictor
    from perception.eval.runner import EvalError, EvalOptions, evaluate
    from perception.nn import create_model

    torch.manual_seed(0)
    model = create_model("rep-n").eval()
    path = tmp_path / "rep-n.onnx"
    export_onnx(model, path, size=(64, 96), dynamic_batch=True, decode=False, verify=False)
    opts = EvalOptions(dataset="synth", frames=1, size=(64, 96), score_thresh=0.001, qualitative=0)
    res = {}
    for name, pred in (("torch", make_backend_predictor(model, "torch", score_thresh=0.001)),
                       ("file", onnx_file_predictor(path, (64, 96), score_thresh=0.001))):
        samples, n, dense = open_dataset(opts)
        res[name] = evaluate(pred, samples, opts, num_frames=n, dense_depth=dense).metrics
    for k in ("abs_rel", "rmse", "a1"):
        assert res["file"]["depth"][k] == pytest.approx(res["torch"]["depth"][k], rel=1e-3, abs=1e-4), k
    assert res["file"]["detection"]["num_gt"] == res["torch"]["detection"]["num_gt"]
    assert sum(res["torch"]["detection"]["num_gt"].values()) > 0
    with pytest.raises(EvalError, match="--size 64x96"):
        onnx_file_predictor(path, (128, 224))
    with pytest.raises(EvalError, match="not found"):
        onnx_file_predictor(tmp_path / "missing.onnx", (64, 96))
    r = runner.invoke(app, ["eval", "--model", str(path), "--dataset", "synth", "--backend", "torch-train",
                            "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "train-form checkpoint" in r.output


def test_eval_cli_synth_end_to_end(tmp_path):
    out = tmp_path / "tmp"
    r = runner.invoke(app, ["eval", "--model", "rep-n", "--random-weights", "--dataset", "synth", "--frames", "2",
                            "--size", "128x224", "--out", str(out)])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["frames"] == 2
    assert {"ap50", "map50", "coco_map", "kitti_ap_r40"} <= set(m["detection"])
    assert set(m["detection"]["ap50"]) == set(CLS)
    for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "abs_rel_median_scaled"):
        assert isinstance(m["depth"][k], float), k
    assert {"center_map", "occupancy_iou"} <= set(m["bev"])
    assert 0.0 < m["bev"]["occupancy_iou_gt_depth"] <= 1.0   # the lifting reaches the GT grid
    assert m["meta"]["seed"] == 90000 and m["meta"]["backend"] == "torch"
    report = (out / "report.md").read_text()
    assert "## 2D detection" in report and "## Depth" in report and "qualitative.png" in report
    assert "| small |" in report and set(m["detection"]["by_size"]) == {"small", "medium", "large"}
    assert (out / "qualitative.png").stat().st_size > 1000


# ----------------------------------------------------------------------------- teacher agreement
def test_agreement_counts_found_cars_by_the_rules():
    from perception.eval.agreement import AgreementCounter

    ag = AgreementCounter(ref_score=0.5, min_height=40, score=0.3, iou=0.5)
    ref = np.array([[100, 100, 200, 180], [300, 100, 320, 120], [500, 100, 600, 200]], float)  # 80, 20, 100 px tall
    ref_scores = np.array([0.9, 0.9, 0.4])  # the third is too unsure to count
    ref_car = np.array([True, True, True])
    # image 1: our car overlaps the first reference car -> found
    assert ag.add(np.array([[105, 102, 198, 182]]), np.array([0.6]), np.array([True]), ref, ref_scores, ref_car)
    # image 2: right place but too low a score, and a confident box of another class -> not found
    assert ag.add(np.array([[105, 102, 198, 182], [100, 100, 200, 180]]), np.array([0.2, 0.9]),
                  np.array([True, False]), ref, ref_scores, ref_car) is False
    # image 3: only the small / unsure reference cars -> not counted at all
    assert ag.add(np.zeros((0, 4)), np.zeros(0), np.zeros(0, bool), ref[1:], ref_scores[1:], ref_car[1:]) is None
    # image 4: the reference car lies outside the evaluated crop -> not counted
    assert ag.add(np.zeros((0, 4)), np.zeros(0), np.zeros(0, bool), ref[:1], ref_scores[:1], ref_car[:1],
                  window=np.array([250, 0, 700, 400])) is None
    m = ag.compute()
    assert m["images"] == 4 and m["images_with_reference_car"] == 2 and m["reference_cars"] == 2
    assert m["car_found_rate"] == pytest.approx(0.5) and m["car_recall"] == pytest.approx(0.5)


def test_agreement_counts_vehicle_boxes_that_match_no_teacher_vehicle():
    from perception.eval.agreement import AgreementCounter

    ag = AgreementCounter(score=0.3, iou=0.5)  # teacher vehicles count from score 0.3
    ref = np.array([[100, 100, 200, 180], [200, 100, 300, 180],   # two cars side by side
                    [400, 100, 500, 200],                          # a car the teacher is unsure of (0.35)
                    [600, 100, 700, 200]], float)                  # a person: not a vehicle
    ref_scores, ref_vehicle = np.array([0.9, 0.9, 0.35, 0.9]), np.array([True, True, True, False])
    ours = np.array([[95, 95, 305, 185],     # one box merged over the two teacher cars: IoU 0.42 with each
                     [100, 100, 200, 180],   # exactly the first car
                     [400, 100, 500, 200],   # the unsure car: still a match
                     [600, 100, 700, 200],   # on the person: a vehicle box of ours the teacher does not explain
                     [800, 100, 900, 120],   # outside the evaluated window: not counted
                     [150, 300, 180, 320]])  # a 20 px box below the threshold score: not counted
    scores, vehicle = np.array([0.8, 0.9, 0.5, 0.4, 0.9, 0.2]), np.array([True] * 6)
    window = np.array([0, 0, 750, 400])
    counted, matched = ag.match_vehicles(ours, scores, vehicle, ref, ref_scores, ref_vehicle, window)
    assert counted.tolist() == [True, True, True, True, False, False]
    assert matched[:4].tolist() == [False, True, True, False]
    ag.add(ours, scores, vehicle, ref, ref_scores, ref_vehicle, window=window, pred_is_vehicle=vehicle,
           ref_is_vehicle=ref_vehicle)
    ag.add(ours[1:2], scores[1:2], vehicle[1:2], ref, ref_scores, ref_vehicle, window=window,
           pred_is_vehicle=vehicle[1:2], ref_is_vehicle=ref_vehicle)  # a clean image: one matched box
    # a 30 px tall unmatched truck (not a car) counts as a vehicle, but not among the boxes >= 40 px tall
    ag.add(np.array([[10, 300, 60, 330]]), np.array([0.7]), np.array([False]), ref, ref_scores, ref_vehicle,
           window=window, pred_is_vehicle=np.array([True]), ref_is_vehicle=ref_vehicle)
    m = ag.compute()
    assert m["vehicle_boxes_per_image"] == pytest.approx(6 / 3, abs=1e-3)
    assert m["unmatched_vehicle_boxes_per_image"] == pytest.approx(3 / 3, abs=1e-3)   # merged, person, truck
    assert m["unmatched_vehicle_boxes_per_image_40px"] == pytest.approx(2 / 3, abs=1e-3)
    assert m["car_found_rate"] == pytest.approx(2 / 3) and m["images_with_reference_car"] == 3  # as before
    # without the vehicle masks (older callers) the new figures are not reported
    assert AgreementCounter().compute()["unmatched_vehicle_boxes_per_image"] is None


def test_eval_size_auto_is_the_size_perception_run_picks(shared_data):
    from perception.eval import EvalOptions, open_dataset
    from perception.eval.datasets import choose_size, resolve_size
    from perception.geometry import Camera
    from perception.pipeline.runner import auto_size

    def cam(w: int, h: int, fx: float) -> Camera:
        return Camera("front", w, h, np.array([[fx, 0, w / 2], [0, fx, h / 2], [0, 0, 1]]))

    auto = EvalOptions(dataset="nuscenes", size=None)
    assert choose_size(auto, cam(1600, 900, 1266.0)) == (256, 448)
    kitti = cam(1242, 375, 721.5)
    assert choose_size(EvalOptions(dataset="kitti", size=None), kitti) == (192, 608) == auto_size(1242, 375, fx=721.5)
    assert choose_size(EvalOptions(dataset="kitti", size=(128, 416)), kitti) == (128, 416)  # an explicit size wins
    assert choose_size(EvalOptions(dataset="synth", size=None), None) == (256, 448)
    # on the shared KITTI frame: its camera decides, and the peeked first sample is not lost
    opts = EvalOptions(dataset="kitti", data=shared_data / "kitti_000008", size=None)
    samples, n, _ = open_dataset(opts)
    opts, samples = resolve_size(opts, samples)
    assert opts.size == (192, 608) and n == 1 and len(list(samples)) == 1


def test_eval_video_with_teacher_reports_agreement(shared_data, tmp_path):
    from typer.testing import CliRunner

    from perception.cli import app

    teacher = shared_data / "weights" / "yolox_nano.onnx"
    video = shared_data / "dashcam" / "test_video.mp4"
    out = tmp_path / "ev"
    r = CliRunner().invoke(app, ["eval", "--model", "rep-n", "--random-weights", "--dataset", "video", "--data",
                                 str(video), "--frames", "3", "--size", "128x224", "--teacher", str(teacher),
                                 "--agree-score", "0.4", "--qualitative", "0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    ta = m["teacher_agreement"]
    assert ta["images"] == 3 and ta["images_with_reference_car"] >= 1  # the teacher sees cars in this clip
    assert ta["rule"]["score"] == 0.4  # --agree-score reaches the counter
    assert ta["vehicle_boxes_per_image"] is not None and ta["unmatched_vehicle_boxes_per_image"] is not None
    assert m["meta"]["size"] == [128, 224]  # an explicit --size wins over auto
    assert "Agreement with the reference detector" in (out / "report.md").read_text()
    # --teacher-tiles: the teacher also looks at 2x2 tiles, so it finds at least the same cars
    r = CliRunner().invoke(app, ["eval", "--model", "rep-n", "--random-weights", "--dataset", "video", "--data",
                                 str(video), "--frames", "3", "--size", "128x224", "--teacher", str(teacher),
                                 "--teacher-tiles", "--qualitative", "0", "--out", str(tmp_path / "tiled")])
    assert r.exit_code == 0, r.output
    tiled = json.loads((tmp_path / "tiled" / "metrics.json").read_text())["teacher_agreement"]
    assert tiled["teacher_tiles"] and not ta["teacher_tiles"]
    assert tiled["reference_cars"] >= ta["reference_cars"] >= 1


@pytest.mark.shared_data
def test_teacher_as_a_2d_reference_model(shared_data, tmp_path):
    """`--model teacher:PATH`: the COCO teacher is scored on the same ground truth, 2D only.
    On KITTI 000008 it finds all six cars (AP50 1.0); it predicts no depth and no 3D boxes, so
    neither depth nor BEV metrics appear."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from typer.testing import CliRunner

    from perception.cli import app

    teacher = shared_data / "weights" / "yolox_nano.onnx"
    out = tmp_path / "ev"
    r = CliRunner().invoke(app, ["eval", "--model", f"teacher:{teacher}", "--dataset", "kitti", "--data",
                                 str(shared_data / "kitti_000008"), "--size", "256x832", "--out", str(out)])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["detection"]["num_gt"]["car"] == 6 and m["detection"]["ap50"]["car"] == 1.0
    assert "depth" not in m and "bev" not in m
    assert "teacher" in m["meta"]["model"]
    r = CliRunner().invoke(app, ["eval", "--model", f"teacher:{tmp_path / 'missing.onnx'}", "--dataset", "kitti",
                                 "--data", str(shared_data / "kitti_000008"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "not found" in r.output


def test_eval_warns_when_the_input_size_is_far_from_the_training_focal_length(caplog):
    from perception.eval.runner import _warn_focal
    from perception.geometry import Camera

    def cam(fx):
        return Camera("c", 640, 384, [[fx, 0, 320], [0, fx, 192], [0, 0, 1]], [0] * 5, np.eye(4))

    with caplog.at_level("WARNING", logger="perception.eval.runner"):
        _warn_focal(cam(354.0))
        _warn_focal(cam(200.0))
        assert not caplog.records
        _warn_focal(cam(579.0))
    assert len(caplog.records) == 1 and "579 px" in caplog.text and "0.61x" in caplog.text
