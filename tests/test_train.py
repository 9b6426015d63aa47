"""Training: assigner, losses, K-consistent augmentation, sample folders, trainer resume, DDP."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from perception.data.sample_folder import SampleFolder
from perception.nn import create_model, load_checkpoint
from perception.train.assigner import TaskAlignedAssigner
from perception.train.config import TrainConfig
from perception.train.data import AugmentConfig, CameraDataset, collate, make_item
from perception.train.losses import silog_loss, varifocal_loss
from perception.train.trainer import epoch_batches, lr_factor, train
from tests.helpers import fake_folder, fake_sample


def test_assigner_picks_anchors_inside_the_box_with_best_alignment():
    anchors = torch.tensor([[5.0, 5.0], [15.0, 5.0], [25.0, 5.0], [5.0, 15.0]])
    pred_boxes = torch.tensor([[[0, 0, 10, 10], [10, 0, 20, 10], [0, 0, 30, 10], [0, 10, 10, 20]]],
                              dtype=torch.float32)
    pred_scores = torch.full((1, 4, 2), 0.5)
    gt_boxes = torch.tensor([[[0.0, 0.0, 30.0, 10.0]]])
    a = TaskAlignedAssigner(topk=2)(pred_scores, pred_boxes, anchors, torch.tensor([[1]]), gt_boxes,
                                    torch.tensor([[True]]))
    # anchors 0..2 are inside; the two best-aligned are anchor 2 (IoU 1) and one of the others
    assert a.fg_mask[0].tolist()[2] is True and a.fg_mask[0].sum() == 2 and not a.fg_mask[0, 3]
    assert a.target_scores[0, 2, 1] == pytest.approx(1.0) and a.target_scores[0, 2, 0] == 0
    assert torch.equal(a.target_boxes[0, 2], gt_boxes[0, 0])


def test_assigner_ignore_regions_and_empty_images():
    anchors = torch.tensor([[5.0, 5.0], [50.0, 50.0]])
    a = TaskAlignedAssigner()(torch.rand(1, 2, 3), torch.zeros(1, 2, 4), anchors, torch.zeros(1, 0, dtype=torch.long),
                              torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.bool),
                              ignore_boxes=torch.tensor([[[0.0, 0.0, 10.0, 10.0], [math.nan] * 4]]))
    assert not a.fg_mask.any() and a.ignore_mask.tolist() == [[True, False]]


def test_varifocal_loss_weights():
    logits = torch.tensor([0.0, 0.0])
    loss = varifocal_loss(logits, torch.tensor([0.0, 1.0]))
    assert loss[0] == pytest.approx(0.75 * 0.25 * math.log(2), rel=1e-5)  # negative: alpha * p^2 * BCE
    assert loss[1] == pytest.approx(math.log(2), rel=1e-5)


def test_silog_is_zero_for_exact_and_penalises_scale_partially():
    gt = torch.rand(1, 1, 8, 8) * 10 + 1
    valid = torch.ones_like(gt)
    assert silog_loss(gt, gt, valid) < 1e-3
    s2 = silog_loss(gt * 2, gt, valid)
    assert s2 == pytest.approx(math.sqrt(0.15) * math.log(2), rel=1e-3)  # lambda 0.85 keeps 15% of scale error


def test_augmentation_keeps_k_consistent_with_pixels():
    """A marker drawn at the projected 3D centre must land at the item's centre_uv after
    random scale, crop and flip."""
    sample = fake_sample(3, width=192, height=128)
    b = sample.boxes2d[0]
    cam = sample.cameras[0]
    X = b.center_cam[0]
    u = cam.K[0, 0] * X[0] / X[2] + cam.K[0, 2]
    v = cam.K[1, 1] * X[1] / X[2] + cam.K[1, 2]
    img = np.zeros_like(sample.images[0])
    img[int(round(v)) - 1:int(round(v)) + 2, int(round(u)) - 1:int(round(u)) + 2] = 255
    sample.images[0] = img
    aug = AugmentConfig(brightness=0, contrast=0, saturation=0, noise=0, min_box_px=0)
    flips = 0
    for seed in range(6):
        item = make_item(sample, 0, (96, 160), np.random.default_rng(seed), aug)
        assert len(item["center_uv"]) >= 1
        uv = item["center_uv"][0]
        ys, xs = np.nonzero(item["image"][..., 0] > 180)
        if not len(xs):
            continue  # marker cropped away
        assert abs(xs.mean() - uv[0]) < 1.5 and abs(ys.mean() - uv[1]) < 1.5, (seed, xs.mean(), ys.mean(), uv)
        flips += int(item["K"][0, 2] < 80)
    # projected depth is unchanged by 2D augmentation, and K scales with the zoom
    assert item["obj_depth"][0] == pytest.approx(X[2], rel=1e-6)


def test_sample_folder_round_trip(tmp_path):
    root = fake_folder(tmp_path / "d", frames=3)
    folder = SampleFolder(root)
    assert len(folder) == 3 and folder.num_cameras() == 2
    orig = fake_sample(1)
    back = folder[1]
    assert np.allclose(back.depth[0], orig.depth[0], atol=1 / 256)
    assert np.allclose(back.boxes2d[0].boxes, orig.boxes2d[0].boxes)
    assert np.allclose(back.cameras[1].T_ego_cam, orig.cameras[1].T_ego_cam)
    one = folder.camera_sample(1, 1)
    assert len(one.images) == 1 and one.cameras[0].name == "cam1"
    (root / "000002" / "labels.json").unlink()  # an unfinished frame is not listed
    assert len(SampleFolder(root)) == 2


def test_collate_pads_boxes(tmp_path):
    ds = CameraDataset(SampleFolder(fake_folder(tmp_path / "d", frames=2)), (64, 96), AugmentConfig(enabled=False))
    batch = collate([ds[i] for i in range(4)])
    assert batch["images"].shape == (4, 3, 64, 96) and batch["depth"].shape == (4, 1, 64, 96)
    n = batch["gt_mask"].sum(1)
    labels = batch["gt_labels"][batch["gt_mask"]]
    assert set(labels.tolist()) <= {0, 3} and n.max() == batch["gt_boxes"].shape[1]  # cars and pedestrians


def test_epoch_batches_shard_without_overlap():
    a = epoch_batches(20, 3, seed=1, epoch=0, rank=0, world=2)
    b = epoch_batches(20, 3, seed=1, epoch=0, rank=1, world=2)
    assert len(a) == len(b) == 3
    flat = sum(a, []) + sum(b, [])
    assert len(set(flat)) == len(flat)
    assert epoch_batches(20, 3, 1, 1, 0, 2) != a


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(100, cfg) == pytest.approx(0.1) and lr_factor(55, cfg) == pytest.approx(0.55)


def _cfg(tmp_path, data, **kw) -> TrainConfig:
    base = dict(model="rep-n", out=str(tmp_path / "run"), data=[str(data)], size=(64, 96), batch=4, steps=6,
                warmup_steps=2, workers=0, amp="none", log_every=1, ckpt_minutes=100.0, ema_decay=0.9)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_resume_is_exact(tmp_path):
    data = fake_folder(tmp_path / "d", frames=4)
    straight = train(_cfg(tmp_path / "a", data))
    cfg = _cfg(tmp_path / "b", data)
    train(cfg, stop_after=4)  # crosses an epoch boundary: 8 images / batch 4 = 2 steps per epoch
    with open(tmp_path / "b" / "run" / "log.csv", "a") as f:  # a row logged after the checkpoint, then killed
        f.write("5,2,0.1,1.0\n")
    resumed = train(cfg, resume=True)
    s1 = torch.load(straight / "last.ckpt", weights_only=False)
    s2 = torch.load(resumed / "last.ckpt", weights_only=False)
    assert s1["step"] == s2["step"] == 6
    for k in s1["model"]:
        assert torch.equal(s1["model"][k], s2["model"][k]), k
    assert not load_checkpoint(resumed / "rep-n.safetensors").is_reparameterized
    assert not (resumed / "rep-n-fused.safetensors").exists()  # one shipped form: fused on load
    lines = (resumed / "log.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 6  # header + one row per step, across the resume
    assert [int(line.split(",")[0]) for line in lines[1:]] == [1, 2, 3, 4, 5, 6]


def test_tensorboard_curves_survive_a_resume(tmp_path):
    """The TensorBoard log holds one loss per step across a kill after the checkpoint and a resume."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    data = fake_folder(tmp_path / "d", frames=4)
    cfg = _cfg(tmp_path, data)
    rows = []
    train(cfg, stop_after=4, progress=rows.append)
    # TensorBoard orders event files by name: the epoch second first, then a per-process counter
    # compared as text (".10" < ".9"), so files written in the same second can be read out of order
    time.sleep(1.1)
    # steps logged after the checkpoint, then killed: the resume must hide them
    with SummaryWriter(str(tmp_path / "run" / "tb")) as w:
        w.add_scalar("train/loss", 1e6, 5)
    time.sleep(1.1)
    train(cfg, resume=True, progress=rows.append)
    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([e.value for e in loss], [r["loss"] for r in rows], rtol=1e-6)
    assert {"train/lr", "train/depth", "train/img_per_s"} <= set(acc.Tags()["scalars"])


@pytest.mark.slow
def test_training_reduces_the_loss(tmp_path):
    data = fake_folder(tmp_path / "d", frames=4)
    rows = []
    train(_cfg(tmp_path, data, steps=40, lr=3e-3, amp="bf16", augment=AugmentConfig(enabled=False)),
          progress=rows.append)
    first = np.mean([r["loss"] for r in rows[:5]])
    last = np.mean([r["loss"] for r in rows[-5:]])
    assert last < 0.7 * first, (first, last)


def test_config_paths_expand_the_home_folder():
    from perception.train.config import TrainConfig

    cfg = TrainConfig.from_dict({"out": "~/runs/x", "init": "~/w.safetensors"})
    assert cfg.out == str(Path.home() / "runs" / "x") and cfg.init == str(Path.home() / "w.safetensors")
    assert TrainConfig.from_dict({"out": "runs/x"}).out == "runs/x"


def test_unknown_config_keys_are_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: rep-n\nlearning_rate: 3\n")
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.load(p)


def _ddp_worker(rank: int, world: int, cfg: TrainConfig, init_file: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    train(cfg)
    model = create_model("rep-n")
    torch.save(model.state_dict(), cfg.out + f"/rank{rank}_unused.pt")
    torch.distributed.destroy_process_group()


def test_ddp_two_cpu_processes(tmp_path):
    data = fake_folder(tmp_path / "d", frames=4)
    cfg = _cfg(tmp_path, data, steps=2, batch=2)
    torch.multiprocessing.spawn(_ddp_worker, args=(2, cfg, str(tmp_path / "init")), nprocs=2, join=True)
    state = torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)
    assert state["step"] == 2
    assert (tmp_path / "run" / "rep-n.safetensors").is_file()


def test_synth_spec_parsing_and_cache_dir(tmp_path):
    from perception.train.sources import parse_synth_spec, synth_cache_dir

    rig, opts = parse_synth_spec("synth:surround6,frames=20,seed=3")
    assert rig == "surround6" and opts["frames"] == 20 and opts["seed"] == 3 and opts["episode_frames"] == 4
    with pytest.raises(ValueError, match="unknown key"):
        parse_synth_spec("synth:surround6,frame=20")
    a = synth_cache_dir("synth:surround6,frames=20", (64, 96), tmp_path)
    assert a != synth_cache_dir("synth:surround6,frames=20", (64, 128), tmp_path)
    # render_scale: 1 (the default) keeps every existing cache; F renders at F times the input size
    assert synth_cache_dir("synth:surround6,frames=20,render_scale=1", (64, 96), tmp_path) == a
    assert synth_cache_dir("synth:surround6,render_scale=2", (64, 96), tmp_path) == \
        synth_cache_dir("synth:surround6", (128, 192), tmp_path)
    for bad in ("0.5", "5"):
        with pytest.raises(ValueError, match="render_scale must be in 1..4"):
            parse_synth_spec(f"synth:surround6,render_scale={bad}")


def test_render_scale_renders_larger_frames_for_the_same_input(tmp_path):
    from perception.train.sources import render_synth

    out = render_synth("synth:front_wide,frames=1,seed=7,render_scale=1.5", (64, 96), cache_root=tmp_path, workers=1)
    sample = SampleFolder(out)[0]
    assert sample.images[0].shape[:2] == (96, 144)
    assert sample.cameras[0].width == 144 and sample.cameras[0].height == 96


def test_concat_source_mixes_camera_counts(tmp_path):
    from perception.data.sample_folder import write_sample_folder
    from perception.train.trainer import ConcatSource

    two = fake_folder(tmp_path / "two", frames=2)
    one_cam = fake_sample(9)
    one_cam.images, one_cam.cameras = one_cam.images[:1], one_cam.cameras[:1]
    one_cam.depth, one_cam.boxes2d = one_cam.depth[:1], one_cam.boxes2d[:1]
    write_sample_folder([one_cam, one_cam], tmp_path / "one")
    src = ConcatSource([str(two), (str(tmp_path / "one"), None, 3)])
    items = src.camera_items()
    assert len(items) == 2 * 2 + 3 * 2 * 1 and items[-1] == (3, 0)
    assert src.camera_sample(3, 0).cameras[0].name == "cam0"


def test_collate_mixes_images_with_and_without_depth(tmp_path):
    ds = CameraDataset(SampleFolder(fake_folder(tmp_path / "d", frames=1)), (64, 96), AugmentConfig(enabled=False))
    a, b = ds[0], ds[1]
    b["depth"] = None  # e.g. a pseudo-labelled real frame
    batch = collate([a, b])
    assert batch["depth"].shape == (2, 1, 64, 96)
    assert (batch["depth"][1] == 0).all() and (batch["depth"][0] > 0).any()
    assert batch["depth_dense"].tolist() == [True, False]


def test_teacher_matches_reference_detections(shared_data):
    """YOLOX-Nano on dashcam frame 0 gives the reference cars of weights/yolox_nano.md."""
    import cv2

    pytest.importorskip("onnxruntime")
    from perception.train.teacher import YoloxTeacher

    teacher = YoloxTeacher(shared_data / "weights" / "yolox_nano.onnx")
    cap = cv2.VideoCapture(str(shared_data / "dashcam" / "test_video.mp4"))
    ok, frame = cap.read()
    assert ok
    labels = teacher.pseudo_labels(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    assert labels.labels.tolist() == [0, 0] and not labels.ignore.any()  # two cars
    ref = np.array([[812.3, 407.4, 944.4, 494.3], [1002.9, 405.5, 1198.1, 501.4]])
    assert np.abs(labels.boxes - ref).max() < 3.0


def test_teacher_spec_writes_a_pseudo_labelled_folder(shared_data, tmp_path):
    pytest.importorskip("onnxruntime")
    from perception.train.sources import pseudo_label

    rig = Path(__file__).resolve().parents[1] / "data" / "rigs" / "dashcam_1280x720.yaml"
    spec = (f"teacher:{shared_data / 'dashcam' / 'test_images'},calib={rig},"
            f"teacher={shared_data / 'weights' / 'yolox_nano.onnx'}")
    out = pseudo_label(spec, cache_root=tmp_path)
    folder = SampleFolder(out)
    assert len(folder) == 6
    s = folder[0]
    assert s.boxes2d[0].center_cam is None
    assert s.cameras[0].width == 1280 and abs(s.cameras[0].fx - 1158.8) < 1
    # sparse depth where the teacher's cars touch the road (test1.jpg: two cars on the right)
    assert s.depth is not None and not s.extras["depth_dense"]
    d = s.depth[0]
    assert 0 < (d > 0).mean() < 0.1 and 5.0 < d[d > 0].min() and d.max() < 40.0
    item = make_item(s, 0, (256, 448), None)
    assert item["depth"] is not None and not item["depth_dense"] and not item["has3d"].any()
    # contact=0: the same boxes, no depth labels, in a cache of its own
    plain = pseudo_label(spec + ",contact=0", cache_root=tmp_path)
    assert plain != out and pseudo_label(spec + ",contact=1", cache_root=tmp_path) == out
    s0 = SampleFolder(plain)[0]
    assert s0.depth is None and np.array_equal(s0.boxes2d[0].boxes, s.boxes2d[0].boxes)


def test_contact_depth_is_the_ground_depth_under_the_box():
    from perception.data.sample import Boxes2D
    from perception.geometry.source_camera import default_camera
    from perception.train.teacher import contact_depth

    cam = default_camera(640, 360, height_m=1.5)            # level: ground depth at row v is fx * 1.5 / (v - cy)
    boxes = Boxes2D(boxes=np.array([[100, 150, 200, 250],     # a car on the road: bottom row 250
                                    [120, 160, 180, 240],     # a farther car behind it (bottom row 240)
                                    [300, 200, 400, 359],     # cut by the bottom of the frame: skipped
                                    [500, 150, 560, 190],     # bottom 190: ~74 m away, too far: skipped
                                    [420, 150, 470, 240]], np.float32),   # a pedestrian: not a vehicle
                    labels=np.array([0, 0, 0, 0, 3]), ignore=np.zeros(5, bool))
    d = contact_depth(boxes, cam)
    z_near, z_far = cam.fx * 1.5 / (250 - cam.K[1, 2]), cam.fx * 1.5 / (240 - cam.K[1, 2])
    assert d[240, 150] == pytest.approx(z_near, rel=1e-4)   # the nearer car occludes the farther one
    assert d[200, 110] == 0.0 and d[170, 150] == 0.0         # outside the lower-central part of the boxes
    assert not d[:, 300:].any()                              # truncated, far and pedestrian boxes add nothing
    boxes.ignore[:] = True
    assert contact_depth(boxes, cam) is None                 # uncertain boxes give no depth
    assert z_far > z_near


def test_far_ignore_band_covers_the_cars_too_small_for_the_teacher():
    from perception.data.sample import Boxes2D
    from perception.geometry.source_camera import default_camera
    from perception.train.sources import parse_teacher_spec
    from perception.train.teacher import far_ignore_band, with_far_ignore

    cam = default_camera(640, 360, height_m=1.5)            # level: horizon at cy
    cy, f = cam.K[1, 2], cam.fy
    x0, y0, x1, y1 = far_ignore_band(cam, 12.0)
    assert (x0, x1) == (0.0, 640.0)
    # a 1.5 m car exactly 12 px tall stands at f * 1.5 / 12 m: its bottom is the band's bottom
    d = f * 1.5 / 12.0
    assert y1 == pytest.approx(cy + f * 1.5 / d, abs=0.01) and y0 == pytest.approx(cy - 12.0, abs=0.01)
    # a car 30 px tall reaches below the band; one 6 px tall lies inside it
    for px, inside in ((30.0, False), (6.0, True)):
        dz = f * 1.5 / px
        bottom, top = cy + f * 1.5 / dz, cy + f * 1.5 / dz - px
        assert (y0 <= top and bottom <= y1) == inside
    boxes = Boxes2D(boxes=np.array([[100, 150, 200, 250]], np.float32), labels=np.array([0]),
                    ignore=np.zeros(1, bool), visibility=np.ones(1, np.float32))
    out = with_far_ignore(boxes, cam, 12.0)
    assert len(out.boxes) == 2 and out.ignore.tolist() == [False, True]
    # the band is an ignore region in the training item (no negatives there), the car a positive
    from perception.data.sample import Sample
    sample = Sample(images=[np.zeros((360, 640, 3), np.uint8)], cameras=[cam],
                    boxes2d=[out])
    item = make_item(sample, 0, (180, 320), None)
    assert len(item["boxes"]) == 1 and len(item["ignore_boxes"]) == 1
    assert item["ignore_boxes"][0][1] == pytest.approx(y0 / 2, abs=0.6)
    # a camera looking down at the road has no horizon in the image
    assert far_ignore_band(default_camera(640, 360, height_m=1.5, pitch_deg=60.0), 12.0) is None
    assert parse_teacher_spec("teacher:x.mp4,far=12")[1]["far"] == 12.0
    with pytest.raises(ValueError, match="far must be"):
        parse_teacher_spec("teacher:x.mp4,far=-1")
    with pytest.raises(ValueError, match="contact must be 0 or 1"):
        parse_teacher_spec("teacher:x.mp4,contact=2")


@pytest.mark.slow
def test_parallel_synth_render_matches_serial(tmp_path):
    """Rendering the training cache in worker processes gives byte-identical frames."""
    from perception.train.sources import render_synth

    spec = "synth:front_wide,frames=4,seed=7,episode_frames=2,fps=2"
    a = render_synth(spec, (64, 96), cache_root=tmp_path / "serial", workers=1)
    b = render_synth(spec, (64, 96), cache_root=tmp_path / "parallel", workers=2)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and len([f for f in files_a if f.name == "labels.json"]) == 4
    for f in files_a:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_photometric_augmentation_is_the_documented_colour_maths():
    from perception.train.data import AugmentConfig, _photometric

    img = np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    r = np.random.default_rng(5)
    out = _photometric(img, r, AugmentConfig(noise=0.0))
    r = np.random.default_rng(5)
    b, c, s = 1 + r.uniform(-0.25, 0.25), 1 + r.uniform(-0.25, 0.25), 1 + r.uniform(-0.3, 0.3)
    x = img.astype(np.float64) / 255 * b
    x = (x - x.mean()) * c + x.mean()
    g = x.mean(-1, keepdims=True)
    x = (x - g) * s + g
    ref = np.round(x.clip(0, 1) * 255).astype(np.int64)
    assert np.abs(out.astype(np.int64) - ref).max() <= 1
    # noise: deterministic for a seed, different for another, about the requested strength
    noisy = [_photometric(img, np.random.default_rng(k), AugmentConfig(noise=0.05)) for k in (7, 7, 8)]
    assert np.array_equal(noisy[0], noisy[1]) and not np.array_equal(noisy[0], noisy[2])


def test_camera_response_randomisation_is_off_by_default_and_seeded_when_on():
    from perception.train.data import AugmentConfig, _camera_response, _photometric

    img = np.full((64, 96, 3), 128, np.uint8)
    img[:, ::8] = 250                                   # vertical stripes: blur must soften them
    base = _photometric(img, np.random.default_rng(3), AugmentConfig())
    # the new fields default to 0: the same picture and the same random stream as before them
    again = _photometric(img, np.random.default_rng(3), AugmentConfig(gamma=0, white_balance=0, blur=0, jpeg=0,
                                                                      vignette=0))
    assert np.array_equal(base, again)
    on = AugmentConfig(gamma=0.3, white_balance=0.1, blur=1.0, jpeg=1.0, vignette=0.4)
    a = _camera_response(img, np.random.default_rng(11), on)
    b = _camera_response(img, np.random.default_rng(11), on)
    c = _camera_response(img, np.random.default_rng(12), on)
    assert a.dtype == np.uint8 and a.shape == img.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a[:, ::8].astype(int).mean() < 245           # the stripes are blurred
    vig = _camera_response(img, np.random.default_rng(2), AugmentConfig(vignette=0.5))
    assert vig[0, 1].mean() < vig[32, 49].mean()        # corners darker than the centre
    # sharpening: the stripes' edges overshoot (brighter peaks, darker troughs next to them)
    soft = cv2.GaussianBlur(img, (0, 0), 1.0)
    sharp = _camera_response(soft, np.random.default_rng(4), AugmentConfig(sharpen=1.0))
    assert sharp[:, ::8].astype(int).mean() > soft[:, ::8].astype(int).mean() + 5
    assert sharp[:, 2::8].astype(int).mean() < soft[:, 2::8].astype(int).mean()
    assert np.array_equal(_camera_response(soft, np.random.default_rng(4), AugmentConfig(sharpen=1.0)), sharp)


def test_surface_detail_adds_fine_texture_but_not_to_the_sky():
    from perception.train.data import _surface_detail

    img = np.full((128, 192, 3), 120, np.uint8)
    depth = np.full((128, 192), 10.0, np.float32)
    depth[:40] = 0.0                                    # rendered sky: no depth
    outs = [_surface_detail(img, np.random.default_rng(k), depth) for k in range(8)]
    for out in outs:
        assert out.dtype == np.uint8 and out.shape == img.shape
        assert np.array_equal(out[:40], img[:40])       # the sky stays smooth
    # fine texture somewhere below: neighbouring pixels differ (high frequency, not a gain change)
    grads = [np.abs(np.diff(o[40:, :, 0].astype(int), axis=1)).mean() for o in outs]
    assert max(grads) > 2.0
    again = _surface_detail(img, np.random.default_rng(3), depth)
    assert np.array_equal(again, outs[3]) and not np.array_equal(outs[3], outs[4])
    assert np.array_equal(outs[0][..., 0], outs[0][..., 2])   # luminance only: grey stays grey
    free = _surface_detail(img, np.random.default_rng(5), None)   # without depth the whole frame may get it
    assert not np.array_equal(free[:40], img[:40]) or not np.array_equal(free[40:], img[40:])


def test_random_convolution_keeps_geometry_and_statistics_and_is_off_by_default():
    from perception.train.data import AugmentConfig, _random_convolution, make_item

    rng = np.random.default_rng(0)
    img = np.zeros((96, 128, 3), np.uint8)
    img[30:60, 40:90] = (200, 60, 30)                   # a red block on black
    img = np.clip(img.astype(int) + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)
    outs = [_random_convolution(img, np.random.default_rng(k)) for k in range(6)]
    for out in outs:
        assert out.dtype == np.uint8 and out.shape == img.shape
        # geometry stays: the block's edge is still where it was (largest contrast across row 30)
        inside, outside = out[35:55, 50:80].reshape(-1, 3).mean(0), out[5:25, 5:30].reshape(-1, 3).mean(0)
        assert np.abs(inside - outside).max() > 15
    assert np.array_equal(_random_convolution(img, np.random.default_rng(3)), outs[3])
    assert not np.array_equal(outs[3], outs[4])
    # the colours change (a random filter mixes the channels), the overall brightness does not much
    assert max(np.abs(o[35:55, 50:80].reshape(-1, 3).mean(0) - img[35:55, 50:80].reshape(-1, 3).mean(0)).max()
               for o in outs) > 20
    assert all(abs(float(o.mean()) - float(img.mean())) < 25 for o in outs)
    # off by default: the same item and the same random stream as a config without the field
    sample = fake_sample(3, width=192, height=128)
    a = make_item(sample, 0, (96, 160), np.random.default_rng(7), AugmentConfig())
    b = make_item(sample, 0, (96, 160), np.random.default_rng(7), AugmentConfig(randconv=0.0))
    c = make_item(sample, 0, (96, 160), np.random.default_rng(7), AugmentConfig(randconv=1.0))
    assert np.array_equal(a["image"], b["image"]) and not np.array_equal(a["image"], c["image"])
    assert np.array_equal(a["boxes"], c["boxes"])      # labels untouched


def test_tiled_teacher_keeps_whole_cars_and_adds_distant_ones(shared_data):
    """test4.jpg: the two near cars stay single whole boxes (no window-sized parts from tiles that
    cut them) and the tiles add distant cars the 416 px whole-image pass misses."""
    import cv2

    pytest.importorskip("onnxruntime")
    from perception.train.teacher import YoloxTeacher

    teacher = YoloxTeacher(shared_data / "weights" / "yolox_nano.onnx")
    img = cv2.cvtColor(cv2.imread(str(shared_data / "dashcam" / "test_images" / "test4.jpg")), cv2.COLOR_BGR2RGB)
    whole = teacher.pseudo_labels(img)
    tiled = teacher.pseudo_labels(img, tiles=True)
    assert len(tiled.boxes) > len(whole.boxes)
    big = tiled.boxes[(tiled.boxes[:, 3] - tiled.boxes[:, 1]) > 60]
    assert len(big) == 2 and np.abs(np.sort(big, 0) - np.sort(whole.boxes[~whole.ignore], 0)).max() < 15
    added = tiled.boxes[(tiled.boxes[:, 3] - tiled.boxes[:, 1]) <= 40]
    assert len(added) >= 2 and tiled.ignore[(tiled.boxes[:, 3] - tiled.boxes[:, 1]) <= 40].all()


def test_gaussian_blur_keeps_flat_images_and_smooths_noise():
    from perception.train.consistency import gaussian_blur

    flat = torch.full((1, 3, 20, 30), 0.4)
    torch.testing.assert_close(gaussian_blur(flat), flat)
    noise = torch.rand(2, 3, 40, 50, generator=torch.Generator().manual_seed(0))
    out = gaussian_blur(noise, 1.0)
    assert out.shape == noise.shape
    assert out.std() < 0.5 * noise.std()                         # a 1-px blur removes most pixel noise
    assert abs(float(out.mean() - noise.mean())) < 0.01
    assert gaussian_blur(noise, 0.0) is noise


def test_blur_consistency_loss_is_scale_invariant_log_error_on_surfaces_only():
    from perception.train.consistency import blur_consistency_loss

    target = torch.full((1, 1, 4, 4), 10.0)
    target[..., 0, :] = 200.0                                    # sky: beyond max_depth, not a target
    assert float(blur_consistency_loss(2.0 * target, target)) == pytest.approx(0.0, abs=1e-6)  # scale only
    pred = torch.full((1, 1, 4, 4), 20.0)
    pred[..., 1, :] = 40.0                                       # one row twice as far as the rest
    pred.requires_grad_(True)
    loss = blur_consistency_loss(pred, target)
    assert float(loss.detach()) == pytest.approx(math.log(2.0) / 3, rel=1e-5)  # 4 of the 12 pixels off
    loss.backward()
    assert (pred.grad[..., 0, :] == 0).all() and (pred.grad[..., 1, :] > 0).all()
    assert float(blur_consistency_loss(pred.detach(), torch.full_like(target, 200.0))) == 0.0
    two = torch.cat([pred.detach(), 3.0 * pred.detach()])       # per image: each its own scale
    assert float(blur_consistency_loss(two, torch.cat([target, target]))) == pytest.approx(float(loss.detach()), rel=1e-5)


def test_affine_blur_consistency_ignores_the_spread_of_depths_but_not_their_pattern():
    from perception.train.consistency import blur_consistency_loss

    target = torch.linspace(2.0, 50.0, 64).reshape(1, 1, 8, 8)
    stretched = target ** 1.5 / 3.0                             # same order, wider spread, other scale
    assert float(blur_consistency_loss(stretched, target)) > 0.1
    assert float(blur_consistency_loss(stretched, target, affine=True)) == pytest.approx(0.0, abs=1e-5)
    shuffled = target.flatten()[torch.randperm(64, generator=torch.Generator().manual_seed(0))].reshape(target.shape)
    assert float(blur_consistency_loss(shuffled, target, affine=True)) > 0.3


def test_blur_consistency_uses_only_images_without_dense_depth():
    """The term is computed on the real frames of a batch (no dense depth labels), with the EMA
    model's depth of the blurred image as the target."""
    from types import SimpleNamespace

    from perception.train.consistency import blur_consistency_loss, gaussian_blur
    from perception.train.trainer import _blur_consistency

    torch.manual_seed(0)
    ema = create_model("rep-n").eval()
    images = torch.rand(2, 3, 64, 96)
    K = torch.tensor([[80.0, 0, 48], [0, 80.0, 32], [0, 0, 1]]).expand(2, 3, 3).contiguous()
    from perception.train.losses import LossWeights

    run = SimpleNamespace(ema=SimpleNamespace(module=ema), blur_teacher=None, amp_dtype=None,
                          device=torch.device("cpu"), cfg=SimpleNamespace(loss=LossWeights(blur_consistency=1.0)))
    depth = torch.full((2, 1, 64, 96), 5.0)
    depth[0] = 1e4                                              # the synthetic image's prediction: not used
    with torch.no_grad():
        expected = blur_consistency_loss(depth[1:], ema(gaussian_blur(images[1:]), K[1:])["depth"])
    batch = {"images": images, "K": K, "depth_dense": torch.tensor([True, False])}
    assert float(_blur_consistency(run, batch, depth)) == pytest.approx(float(expected), rel=1e-5)
    run.blur_teacher = create_model("rep-n").eval()             # a frozen teacher replaces the EMA
    with torch.no_grad():
        other = blur_consistency_loss(depth[1:], run.blur_teacher(gaussian_blur(images[1:]), K[1:])["depth"])
    assert float(other) != pytest.approx(float(expected), rel=1e-3)
    assert float(_blur_consistency(run, batch, depth)) == pytest.approx(float(other), rel=1e-5)
    run.cfg.loss.blur_consistency_max_depth = 1e-3                # no target surface that near: nothing pulled
    assert float(_blur_consistency(run, batch, depth)) == 0.0
    run.cfg.loss.blur_consistency_max_depth = 80.0
    batch["depth_dense"] = torch.tensor([True, True])
    assert float(_blur_consistency(run, batch, depth)) == 0.0


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "1", True])
def test_blur_consistency_weight_is_checked(bad):
    with pytest.raises(ValueError, match="blur_consistency"):
        TrainConfig.from_dict({"loss": {"blur_consistency": bad}})
    assert TrainConfig.from_dict({"loss": {"blur_consistency": 0.5}}).loss.blur_consistency == 0.5
    with pytest.raises(ValueError, match="blur_teacher"):                # a teacher for a term that is off
        TrainConfig.from_dict({"blur_teacher": "rep-s"})
    with pytest.raises(ValueError, match="blur_consistency_affine"):
        TrainConfig.from_dict({"loss": {"blur_consistency": 1.0, "blur_consistency_affine": "yes"}})


@pytest.mark.parametrize("bad", [0.0, -5.0, float("nan"), "20", True])
def test_blur_consistency_max_depth_is_checked(bad):
    with pytest.raises(ValueError, match="blur_consistency_max_depth"):
        TrainConfig.from_dict({"loss": {"blur_consistency": 1.0, "blur_consistency_max_depth": bad}})
