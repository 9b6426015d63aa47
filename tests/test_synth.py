"""Synthetic world: exact depth, masks inside projected boxes, determinism, motion, labels, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from perception.data.synth import (RenderOptions, Renderer, SynthDataset, SynthFolder, World, WorldConfig,
                                   make_front_wide, make_surround6)
from perception.data.synth.scene import SEM
from perception.geometry import transform_points

H, W = 128, 224


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small renders gain nothing from 2 threads and, on a shared busy CPU, OpenMP spin-waits
    make them many times slower; restore the session's setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def rig():
    return make_surround6().scaled(W, H)


@pytest.fixture(scope="module")
def frame(rig):
    """A busy urban daytime frame (fixed seed) rendered once for several tests."""
    world = World(11, WorldConfig(scenery="urban", weather="clear", time_of_day="day", duration=5))
    for _ in range(3):
        world.step(0.1)
    renderer = Renderer(rig, "cpu")
    return world, renderer(world)


def test_ground_depth_is_exact(frame):
    """Unprojecting rendered depth of ground pixels lands on the z = 0 plane (within 1 mm)."""
    world, s = frame
    T_world_ego = s.extras["T_world_ego"]
    checked = 0
    for cam, depth, sem, inst in zip(s.cameras, s.depth, s.extras["semantic"], s.extras["instance"]):
        ground = np.isin(sem, [SEM["road"], SEM["lane_marking"], SEM["sidewalk"], SEM["terrain"]]) & (depth > 0)
        ground &= depth < 80
        vv, uu = np.nonzero(ground)
        if len(vv) == 0:
            continue
        pts_ego = cam.unproject(np.stack([uu, vv], -1).astype(np.float64), depth[vv, uu].astype(np.float64))
        z = transform_points(T_world_ego, pts_ego)[:, 2]
        # analytic depth of the same rays: camera height over the ray's downward slope
        rays = cam.pixel_rays(np.stack([uu, vv], -1).astype(np.float64))
        R = (T_world_ego @ cam.T_ego_cam)[:3, :3]
        h = (T_world_ego @ cam.T_ego_cam)[2, 3]
        analytic = -h / (rays @ R.T)[:, 2]
        assert np.abs(z).max() < 1e-3, cam.name
        assert np.abs(depth[vv, uu] - analytic).max() < 1e-3, cam.name
        assert (inst[vv, uu] == 0).all()
        checked += len(vv)
    assert checked > 5000
    assert all((d[s.extras["semantic"][i] == SEM["sky"]] == 0).all() for i, d in enumerate(s.depth))


def test_instance_masks_inside_projected_boxes(frame):
    """Every rendered pixel of an object lies inside its projected 3D box rectangle (+1 px)."""
    _, s = frame
    b3 = s.boxes3d
    corners = b3.corners()
    n_checked = 0
    for cam, inst in zip(s.cameras, s.extras["instance"]):
        for k, oid in enumerate(b3.instance_ids):
            vv, uu = np.nonzero(inst == oid)
            if len(vv) == 0:
                continue
            uv, z = cam.project(corners[k])
            front = z > 0.05
            if not front.all():
                continue  # box crosses the camera plane: rectangle unbounded
            x0, y0 = uv.min(0) - 1
            x1, y1 = uv.max(0) + 1
            assert uu.min() >= x0 and uu.max() <= x1 and vv.min() >= y0 and vv.max() <= y1, (cam.name, oid)
            n_checked += 1
    assert n_checked >= 10


def test_boxes2d_consistent_with_masks(frame):
    _, s = frame
    total = 0
    for cam, b, inst in zip(s.cameras, s.boxes2d, s.extras["instance"]):
        ids_in_image = set(np.unique(inst)) - {0}
        assert set(b.instance_ids.tolist()) == ids_in_image, cam.name
        for box, oid, vis, occ, trunc, dep, cc in zip(b.boxes, b.instance_ids, b.visibility, b.occlusion, b.truncation,
                                                       b.depth, b.center_cam):
            vv, uu = np.nonzero(inst == oid)
            # visible pixels inside the (amodal) box, box edges on pixel borders
            assert uu.min() >= box[0] + 0.5 and uu.max() <= box[2] - 0.5
            assert vv.min() >= box[1] + 0.5 and vv.max() <= box[3] - 0.5
            assert 0 < vis <= 1 and 0 <= trunc <= 1
            assert occ == (0 if vis >= 0.8 else 1 if vis >= 0.4 else 2)
            assert dep == pytest.approx(cc[2])
            total += 1
    assert total >= 10
    # labels of 2D boxes agree with the 3D boxes of the same instance
    lab3 = dict(zip(s.boxes3d.instance_ids.tolist(), s.boxes3d.labels.tolist()))
    for b in s.boxes2d:
        assert all(lab3[i] == l for i, l in zip(b.instance_ids.tolist(), b.labels.tolist()))


def test_same_seed_same_pixels_different_seed_different_scene(rig):
    small = rig.scaled(112, 64)
    opts = RenderOptions(bev=None)
    a = Renderer(small, options=opts)(World(5, WorldConfig(duration=3)))
    b = Renderer(small, options=opts)(World(5, WorldConfig(duration=3)))
    c = Renderer(small, options=opts)(World(6, WorldConfig(duration=3)))
    for x, y in zip(a.images, b.images):
        assert np.array_equal(x, y)
    for x, y in zip(a.depth, b.depth):
        assert np.array_equal(x, y)
    assert np.array_equal(a.boxes3d.center, b.boxes3d.center)
    diff = np.mean([np.abs(x.astype(int) - y.astype(int)).mean() for x, y in zip(a.images, c.images)])
    assert diff > 10
    assert len(a.boxes3d) != len(c.boxes3d) or not np.allclose(a.boxes3d.center, c.boxes3d.center)


def test_episode_motion_is_smooth():
    world = World(3, WorldConfig(duration=4))
    dt = 0.1
    pos, T = [], []
    for _ in range(20):
        fr = world.frame()
        pos.append({i: (c, v) for i, c, v in zip(fr.objects["id"], fr.objects["center"], fr.objects["velocity"])})
        T.append(fr.ego_pose)
        world.step(dt)
    ego_step = [np.linalg.norm(T[k + 1][:2, 3] - T[k][:2, 3]) for k in range(len(T) - 1)]
    assert min(ego_step) > 0.3 and max(ego_step) < 2.0      # 3..20 m/s, no jumps
    moved = 0
    for k in range(1, len(pos)):
        for i, (c, v) in pos[k].items():
            if i in pos[k - 1]:
                step = np.linalg.norm(c[:2] - pos[k - 1][i][0][:2])
                assert step < 25 * dt + 1e-6, i                # no teleporting (< 25 m/s)
                # reported velocity matches the displacement over the step
                assert np.allclose(v, (c[:2] - pos[k - 1][i][0][:2]) / dt, atol=1e-6)
                moved += step > 0.05
    assert moved > 20
    # ego-frame positions change smoothly: second differences are small
    world = World(3, WorldConfig(duration=4))
    rig = make_front_wide().scaled(160, 96)
    ds_boxes = []
    r = Renderer(rig, options=RenderOptions(bev=None, labels=False, effects=False))
    for _ in range(4):
        ds_boxes.append(r(world).boxes3d)
        world.step(dt)
    common = set(ds_boxes[0].instance_ids) & set(ds_boxes[1].instance_ids) & set(ds_boxes[2].instance_ids)
    assert common
    for i in common:
        p = [b.center[list(b.instance_ids).index(i)] for b in ds_boxes[:3]]
        acc = np.linalg.norm(p[2] - 2 * p[1] + p[0]) / dt ** 2
        assert acc < 12.0, i


def test_bev_ground_truth(frame):
    _, s = frame
    bev = s.extras["bev"]
    assert bev["drivable"].shape == (400, 400)
    # the ego stands on the road: centre cells drivable and occupied by nothing
    assert bev["drivable"][195:205, 195:205].all()
    # object footprints drawn where the 3D boxes are (up = forward, left = left)
    b = s.boxes3d
    k = int(np.argmin(np.abs(b.center[:, :2]).sum(1) + 100 * (np.abs(b.center[:, :2]) > 45).any(1)))
    x, y = b.center[k, :2]
    row, col = int(200 - x / 0.25), int(200 - y / 0.25)
    assert bev["instances"][row, col] == b.instance_ids[k]
    assert bev["occupancy"][row, col] == 2
    assert bev["lanes"].sum() > 100


def test_synth_dataset_scaling_and_access():
    ds = SynthDataset("front_wide", seed=2, frames=3, size=(96, 160), episode_frames=2,
                      options=RenderOptions(bev=None, effects=False))
    assert len(ds) == 3 and ds.rig.cameras[0].width == 160
    s2 = ds[2]                      # second episode
    s1 = ds[1]
    assert s1.images[0].shape == (96, 160, 3) and s2.extras["episode"] == 1 and s1.extras["episode"] == 0
    assert not np.array_equal(ds[0].images[0], ds[1].images[0])   # the world moved
    assert np.array_equal(ds[1].images[0], s1.images[0])         # random access is deterministic


def test_cli_writes_dataset_and_reader_reads_it(tmp_path):
    from perception.cli import app
    out = tmp_path / "drive"
    res = CliRunner().invoke(app, ["synth", "--rig", "surround6", "--frames", "3", "--seed", "4", "--out", str(out),
                                   "--size", "64x112", "--depth-scale", "2"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["frames"] == 3 and meta["size"] == [64, 112] and meta["format"] == "perception-synth"
    for name in ("front", "front_left", "front_right", "back", "back_left", "back_right"):
        assert (out / f"{name}.mp4").stat().st_size > 0
        assert len(list((out / "depth" / name).glob("*.png"))) == 3
    assert len((out / "labels.jsonl").read_text().splitlines()) == 3
    assert (out / "README.md").is_file() and len(list((out / "bev").glob("*.png"))) == 3
    ds = SynthFolder(out)
    assert len(ds) == 3 and ds.rig.cameras[0].source == "front.mp4"
    s = ds[2]
    assert s.images[0].shape == (64, 112, 3) and s.depth[0].shape == (64, 112)
    assert s.timestamp == pytest.approx(0.2)
    # the files agree with a fresh render of the same seed
    ref = SynthDataset("surround6", seed=4, frames=3, size=(64, 112), episode_frames=3)[2]
    assert np.array_equal(s.boxes3d.instance_ids, ref.boxes3d.instance_ids)
    assert np.allclose(s.boxes3d.center, ref.boxes3d.center, atol=2e-3)
    for b, rb in zip(s.boxes2d, ref.boxes2d):
        assert np.allclose(b.boxes, rb.boxes, atol=0.06)
    d, rd = s.depth[0][1::2, 1::2], ref.depth[0][1::2, 1::2]
    ok = (rd > 0) & (rd < 250)
    assert np.abs(d[ok] - rd[ok]).max() < 0.003
    assert np.abs(s.images[0].astype(int) - ref.images[0].astype(int)).mean() < 12   # lossy video
    bad = CliRunner().invoke(app, ["synth", "--frames", "0", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0
    for flag, value in (("--barriers", "1.5"), ("--roadworks", "2"), ("--shrubs", "-0.1"), ("--closures", "1.1"),
                        ("--medians", "1.5"), ("--arcades", "-1"), ("--lane-closures", "1.2"), ("--greenery", "2")):
        bad = CliRunner().invoke(app, ["synth", flag, value, "--out", str(tmp_path / "x")])
        assert bad.exit_code == 1 and f"{flag} must be in 0..1" in bad.output, flag


def test_rigs():
    r = make_surround6()
    assert r.names == ["front", "front_left", "front_right", "back", "back_left", "back_right"]
    f = r["front"]
    assert f.width == 1600 and f.height == 900 and abs(f.fx - 1266.4) < 1
    assert abs(f.T_ego_cam[2, 3] - 1.51) < 0.05 and f.T_ego_cam[0, 3] > 1.0
    # the front camera looks forward: optical axis = ego +x
    assert np.allclose(f.T_ego_cam[:3, 2], [1, 0, 0])
    assert np.allclose(r["back"].T_ego_cam[:3, 2], [-1, 0, 0], atol=1e-9)
    assert len(make_front_wide()) == 1


def test_parallel_rendering_gives_the_same_frames():
    from perception.data.synth import SynthDataset

    ds = SynthDataset("front_wide", seed=3, frames=5, size=(48, 80), fps=10, episode_frames=5)
    serial = [ds[i] for i in range(5)]
    parallel = list(SynthDataset("front_wide", seed=3, frames=5, size=(48, 80), fps=10,
                                 episode_frames=5).iter_parallel(2, chunk=2))
    assert [s.frame_id for s in parallel] == [s.frame_id for s in serial]
    for a, b in zip(serial, parallel):
        assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images))
        assert all(np.array_equal(x, y) for x, y in zip(a.depth, b.depth))
        assert np.allclose(a.boxes3d.center, b.boxes3d.center)


def _with_option(seed: int, cfg: dict, **option: float) -> tuple[World, int]:
    """The world of ``seed`` with one opt-in option, and how many static primitives it has without:
    everything else (the primitives before those, and the traffic) must be the world without it."""
    plain, world = World(seed, WorldConfig(**cfg)), World(seed, WorldConfig(**cfg, **option))
    n = len(plain.static.kind)
    np.testing.assert_array_equal(world.static.center[:n], plain.static.center)    # same world ...
    assert [a.s for a in world.agents] == [a.s for a in plain.agents]               # ... and traffic
    return world, n


def _plain_and_unchanged_at_zero(seed: int, cfg: dict, option: str) -> World:
    """The world of ``seed`` without ``option``; asserts that ``option=0`` gives the same static scene."""
    plain, same = World(seed, WorldConfig(**cfg)), World(seed, WorldConfig(**cfg, **{option: 0.0}))
    for k in ("kind", "center", "half", "mat", "color", "sem"):
        np.testing.assert_array_equal(getattr(same.static, k), getattr(plain.static, k))
    return plain


def test_roadside_barriers_are_opt_in_and_leave_the_rest_of_the_world_alone():
    cfg = dict(scenery="rural", duration=5.0)
    walled, n = _with_option(4, cfg, barriers=1.0)
    extra = len(walled.static.kind) - n
    assert extra > 50                                       # barriers or rails along both sides
    # every barrier primitive stands off the carriageway: beyond the road edge, within 1 m of it
    lay = walled.layout
    c = walled.static.center[n:]
    surf = lay.surface(torch.as_tensor(c[:, 0]), torch.as_tensor(c[:, 1]))
    assert bool((surf["dc"] >= -0.01).all()) and bool((surf["dc"] < lay.curb + 1.0).all())
    assert bool((walled.static.sem[n:] == SEM["building"]).all())
    assert len(World(4, WorldConfig(**cfg, barriers=0.0)).static.kind) == n


def test_roadworks_barriers_are_opt_in_coloured_and_near_the_ego():
    cfg = dict(scenery="urban", duration=5.0)
    works, n = _with_option(4, cfg, roadworks=1.0)
    c, col = works.static.center[n:], works.static.color[n:]
    assert len(c) >= 2 * 3 * 5                              # two runs of >= 5 segments, 3 boxes each
    white = np.abs(col - col.mean(1, keepdims=True)).max(1) < 0.05
    assert 0.3 < white.mean() < 0.7                         # segments alternate colour and white
    assert (col[~white][:, 0] > 2 * col[~white][:, 2]).all()    # red, orange or yellow: not grey
    lay = works.layout
    surf = lay.surface(torch.as_tensor(c[:, 0]), torch.as_tensor(c[:, 1]))
    assert bool((surf["dc"] > lay.curb).all())              # off the carriageway and the curb
    ego_xy = lay.pose(np.array([150.0]), 0.0)
    dist = np.hypot(c[:, 0] - ego_xy[0][0], c[:, 1] - ego_xy[1][0])
    assert dist.min() < 70                                  # where the cameras see them
    assert bool((works.static.sem[n:] == SEM["building"]).all())


def test_lane_edge_barriers_are_opt_in_and_on_the_road_edge_near_the_ego():
    cfg = dict(scenery="urban", duration=5.0)
    closed, n = _with_option(7, cfg, closures=1.0)
    c, col = closed.static.center[n:], closed.static.color[n:]
    assert len(c) >= 2 * 3 * 10                             # two lines of >= 10 units, 3 boxes each
    white = np.abs(col - col.mean(1, keepdims=True)).max(1) < 0.05
    assert 0.3 < white.mean() < 0.7                         # units alternate colour and white
    assert (col[~white][:, 0] > 3 * col[~white][:, 2]).all()    # red or orange
    lay = closed.layout
    surf = lay.surface(torch.as_tensor(c[:, 0]), torch.as_tensor(c[:, 1]))
    # on the road, 0.3 m beyond the outermost lane (and parking lane): the shoulder's inner edge
    np.testing.assert_allclose(surf["dc"].numpy(), 0.3 - lay.shoulder, atol=0.05)
    ego_xy = lay.pose(np.array([150.0]), 0.0)
    assert np.hypot(c[:, 0] - ego_xy[0][0], c[:, 1] - ego_xy[1][0]).min() < 45     # in view
    assert bool((closed.static.sem[n:] == SEM["building"]).all())
    assert len(World(7, WorldConfig(**cfg, closures=0.0)).static.kind) == n


def test_lane_closures_stand_on_the_lane_edge_in_front_of_the_parked_cars():
    cfg = dict(scenery="urban", duration=5.0)
    for seed in range(1, 40):       # a road with a parking lane and parked cars on a closed side
        closed, n = _with_option(seed, cfg, lane_closures=1.0)
        lay = closed.layout
        if lay.parking > 0 and any(a.mode == "parked" for a in closed.agents):
            break
    c, col = closed.static.center[n:], closed.static.color[n:]
    assert len(c) >= 2 * 4 * 7                              # two lines of >= 7 units, 4 boxes each
    assert bool((closed.static.sem[n:] == SEM["building"]).all())
    white = np.abs(col - col.mean(1, keepdims=True)).max(1) < 0.05
    assert 0.1 < white.mean() < 0.9                         # red or orange units and white ones
    assert (col[~white][:, 0] > 3 * col[~white][:, 2]).all()
    # every unit stands at the outer edge of the outermost traffic lane (turned a little)
    edge = max(lay.lanes_fwd, lay.lanes_bwd) * lay.lane_width
    surf = lay.surface(torch.as_tensor(c[:, 0]), torch.as_tensor(c[:, 1]))
    d_abs = surf["dc"].numpy() + lay.half_width
    assert bool((np.abs(d_abs - (edge - 0.25)) < 0.1).all())
    # parked cars stand behind the line, clear of its 0.2 m half-wide foot (turned up to 5 degrees)
    cars = [a for a in closed.agents if a.mode == "parked" and a.cls == "car"]
    assert cars and all(abs(a.d) - a.size[1] / 2 > edge - 0.25 + 0.2 + 0.09 for a in cars)
    ego_xy = lay.pose(np.array([150.0]), 0.0)
    assert np.hypot(c[:, 0] - ego_xy[0][0], c[:, 1] - ego_xy[1][0]).min() < 45     # in view
    assert len(World(seed, WorldConfig(**cfg, lane_closures=0.0)).static.kind) == n


def test_greenery_sets_town_buildings_back_behind_tall_hedges_and_grows_street_trees():
    from perception.data.synth import assets

    cfg = dict(scenery="urban", duration=5.0)
    plain = _plain_and_unchanged_at_zero(3, cfg, "greenery")
    green = World(3, WorldConfig(**cfg, greenery=1.0))
    lay = green.layout
    hedge = green.static.mat == assets.HEDGE
    assert not (plain.static.mat == assets.HEDGE).any() and hedge.sum() > 50
    c, half = green.static.center[hedge], green.static.half[hedge]
    surf = lay.surface(torch.as_tensor(c[:, 0]), torch.as_tensor(c[:, 1]))
    assert bool((surf["dc"] >= lay.curb + lay.sidewalk).all())          # beyond the sidewalk ...
    assert bool((surf["dc"] < lay.curb + lay.sidewalk + 3.0).all())     # ... in front of the houses
    assert (c[:, 2] + half[:, 2]).max() > 1.8                            # taller than a person
    facade = lambda w: w.static.mat == assets.FACADE                     # noqa: E731
    d = lambda w: lay.surface(*(torch.as_tensor(w.static.center[facade(w)][:, i]) for i in (0, 1)))["dc"]  # noqa: E731
    assert float(d(green).median()) > float(d(plain).median()) + 2.0     # houses stand back
    crown = lambda w: w.static.half[(w.static.mat == assets.FOLIAGE)][:, 0]   # noqa: E731
    assert float(np.median(crown(green))) > 1.2 * float(np.median(crown(plain)))


def test_median_barrier_is_opt_in_on_the_centre_line_and_clear_of_the_lanes():
    from perception.data.synth import assets

    cfg = dict(scenery="rural", duration=5.0)
    railed = None
    for seed in range(4, 12):
        divided, n = _with_option(seed, cfg, medians=1.0)
        st, lay = divided.static, divided.layout
        c, half = st.center[n:], st.half[n:]
        assert len(c) > 3 * 40                              # segments along the whole road
        surf = lay.surface(torch.as_tensor(c[:, 0]), torch.as_tensor(c[:, 1]))
        np.testing.assert_allclose(surf["d"].numpy(), 0.0, atol=0.05)   # on the centre line ...
        assert float(half[:, 1].max()) <= 0.3 + 1e-9        # ... and no wider than 0.6 m:
        car_half_width = 1.85 / 2                           # clear of a car in the inner lane
        assert 0.3 < lay.lane_width / 2 - car_half_width
        assert bool((st.sem[n:] == SEM["building"]).all())
        for x in lay.crossings:                             # broken where cross roads meet
            assert bool((np.abs(surf["s"].numpy() - x.s_main) > x.half_width).all())
        if (st.mat[n:] == assets.METAL).any():
            railed = st
            metal = st.mat[n:] == assets.METAL
            top_concrete = float((c[~metal, 2] + half[~metal, 2]).max())
            assert float((c[metal, 2] + half[metal, 2]).min()) > top_concrete   # the rail is on top
    assert railed is not None                               # half the medians have a rail
    assert len(World(4, WorldConfig(**cfg, medians=0.0)).static.kind) == len(World(4, WorldConfig(**cfg)).static.kind)


def test_arcade_puts_the_upper_floors_on_pillars_inside_the_building_footprint():
    from perception.data.synth import assets

    rng = np.random.default_rng(0)
    for facing in (-1, 1):
        for _ in range(20):
            l, w, h = rng.uniform(10, 30), rng.uniform(10, 20), rng.uniform(8, 35)
            house = assets.building(rng, l, w, h, False)
            arc = assets.with_arcade(house, rng, facing)
            lo = np.where(arc.kind[:, None] == assets.CYL, arc.center - arc.half[:, [0, 0, 2]],
                          arc.center - arc.half)
            hi = np.where(arc.kind[:, None] == assets.CYL, arc.center + arc.half[:, [0, 0, 2]],
                          arc.center + arc.half)
            assert (lo >= [-l / 2 - 1e-9, -w / 2 - 1e-9, -1e-9]).all()      # the footprint does not change
            assert (hi <= [l / 2 + 1e-9, w / 2 + 1e-9, h + 1e-9]).all()
            upper, ground = arc.center[0, 2] - arc.half[0, 2], arc.center[1, 2] + arc.half[1, 2]
            assert 3.5 - 1e-9 <= upper <= min(8.0, 0.6 * h) + 1e-9 and abs(upper - ground) < 1e-9
            front = facing * w / 2
            recess = abs(front - (arc.center[1, 1] + facing * arc.half[1, 1]))
            assert 2.0 - 1e-9 <= recess <= 5.0 + 1e-9                        # the ground storey is set back
            pillars = arc.mat == assets.PLAIN
            assert pillars.sum() >= 2
            assert np.allclose(arc.center[pillars, 1] + facing * arc.half[pillars, 0], front)   # along the front
            assert np.allclose(arc.half[pillars, 2] * 2, upper)               # holding the upper floors


def test_arcades_are_opt_in_and_leave_the_rest_of_the_world_alone():
    cfg = dict(scenery="urban", duration=5.0)
    plain = _plain_and_unchanged_at_zero(3, cfg, "arcades")
    arc = World(3, WorldConfig(**cfg, arcades=1.0))
    assert [a.s for a in arc.agents] == [a.s for a in plain.agents]        # same traffic
    other_p, other_a = plain.static.sem != SEM["building"], arc.static.sem != SEM["building"]
    np.testing.assert_array_equal(arc.static.center[other_a], plain.static.center[other_p])   # same trees, lamps ...
    from perception.data.synth import assets
    pillars = (arc.static.sem == SEM["building"]) & (arc.static.mat == assets.PLAIN) & (arc.static.half[:, 2] >= 1.75)
    assert pillars.sum() > 20                                                # every urban building has one


def test_leaf_texture_is_opt_in_and_only_on_near_vegetation():
    """``leaves`` adds leaf-scale texture to vegetation where a pixel is smaller than a leaf and
    leaves everything else, far vegetation included, as it was."""
    import cv2

    from perception.cli import app
    from perception.data.synth.dataset import resolve_rig
    from perception.data.synth.render import render
    from perception.train.sources import parse_synth_spec, synth_cache_dir

    rig = resolve_rig("surround6", (256, 448))
    cfg = dict(scenery="urban", shrubs=1.0, duration=5.0, weather="clear", time_of_day="day")
    plain = render(World(11, WorldConfig(**cfg)), rig)
    same = render(World(11, WorldConfig(**cfg, leaves=0.0)), rig)
    leafy = render(World(11, WorldConfig(**cfg, leaves=1.0)), rig)
    near_changed, other_changed, far_changed, sharper = [], [], [], []
    for a, s, b, sem, z in zip(plain.images, same.images, leafy.images, plain.extras["semantic"], plain.depth):
        np.testing.assert_array_equal(a, s)
        changed = (a != b).any(-1)
        veg = sem == SEM["vegetation"]
        near, far = veg & (z > 0) & (z < 8), veg & (z > 25)
        if near.sum() > 500:
            near_changed.append(changed[near].mean())
            detail = [np.abs(cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_32F))[near].mean()
                      for im in (a, b)]
            sharper.append(detail[1] / detail[0])
        if far.sum():
            far_changed.append(changed[far].mean())
        beside = cv2.dilate(veg.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0   # blur and defocus spread
        other_changed.append(changed[~beside].mean())
    assert near_changed and min(near_changed) > 0.5          # near bushes and crowns get the texture ...
    assert min(sharper) > 1.1 and np.mean(sharper) > 1.2    # ... which is fine detail
    assert far_changed and max(far_changed) < 0.05           # far vegetation stays smooth
    assert max(other_changed) < 0.002                        # nothing else changes
    assert synth_cache_dir("synth:front_wide,seed=5,leaves=0", (64, 96)) == synth_cache_dir("synth:front_wide,seed=5", (64, 96))
    assert synth_cache_dir("synth:front_wide,seed=5,leaves=0.5", (64, 96)) != synth_cache_dir("synth:front_wide,seed=5", (64, 96))
    with pytest.raises(ValueError, match="leaves must be a strength in 0..1"):
        parse_synth_spec("synth:front_wide,leaves=2")
    bad = CliRunner().invoke(app, ["synth", "--leaves", "1.5", "--out", "unused"])
    assert bad.exit_code == 1 and "--leaves must be in 0..1" in bad.output


@pytest.mark.parametrize("scenery", ["urban", "suburban", "rural"])
def test_roadside_shrubs_are_opt_in_low_vegetation_beside_the_road(scenery):
    from perception.data.synth import assets

    cfg = dict(scenery=scenery, duration=5.0)
    green, n = _with_option(4, cfg, shrubs=1.0)
    st = green.static
    c, half, mat = st.center[n:], st.half[n:], st.mat[n:]
    assert (mat == assets.FOLIAGE).sum() > 100              # rows of bushes along both sides
    assert bool((st.sem[n:] == SEM["vegetation"]).all())
    assert ((c[:, 2] + half[:, 2]) < 3.2).all()             # low: bushes and planters, not trees
    lay = green.layout
    surf = lay.surface(torch.as_tensor(c[:, 0]), torch.as_tensor(c[:, 1]))
    assert bool((surf["dc"] > lay.curb).all())              # off the carriageway and the curb
    planters = mat == assets.PLAIN
    if scenery == "rural":
        assert not planters.any()                           # raised planters only in towns
    else:
        assert planters.any() and bool((surf["dc"][torch.as_tensor(planters)] < lay.curb + lay.sidewalk).all())


def test_barriers_in_a_synth_spec_change_the_cache_key(tmp_path):
    from perception.train.sources import parse_synth_spec, synth_cache_dir

    assert parse_synth_spec("synth:front_wide,barriers=0.5")[1]["barriers"] == 0.5
    with pytest.raises(ValueError, match="probability"):
        parse_synth_spec("synth:front_wide,barriers=2")
    base = synth_cache_dir("synth:front_wide,seed=5", (64, 96), tmp_path)
    assert synth_cache_dir("synth:front_wide,seed=5,barriers=0", (64, 96), tmp_path) == base   # old caches stay valid
    assert synth_cache_dir("synth:front_wide,seed=5,barriers=0.5", (64, 96), tmp_path) != base
    assert synth_cache_dir("synth:front_wide,seed=5,roadworks=0", (64, 96), tmp_path) == base
    assert synth_cache_dir("synth:front_wide,seed=5,roadworks=0.5", (64, 96), tmp_path) != base
    with pytest.raises(ValueError, match="roadworks must be a probability"):
        parse_synth_spec("synth:front_wide,roadworks=-1")
    assert synth_cache_dir("synth:front_wide,seed=5,shrubs=0", (64, 96), tmp_path) == base
    assert synth_cache_dir("synth:front_wide,seed=5,shrubs=0.7", (64, 96), tmp_path) != base
    with pytest.raises(ValueError, match="shrubs must be a probability"):
        parse_synth_spec("synth:front_wide,shrubs=1.5")
    assert synth_cache_dir("synth:front_wide,seed=5,closures=0", (64, 96), tmp_path) == base
    assert synth_cache_dir("synth:front_wide,seed=5,closures=0.5", (64, 96), tmp_path) != base
    assert synth_cache_dir("synth:front_wide,seed=5,medians=0", (64, 96), tmp_path) == base
    assert synth_cache_dir("synth:front_wide,seed=5,medians=0.5", (64, 96), tmp_path) != base
    assert synth_cache_dir("synth:front_wide,seed=5,arcades=0", (64, 96), tmp_path) == base
    assert synth_cache_dir("synth:front_wide,seed=5,arcades=0.5", (64, 96), tmp_path) != base
    assert synth_cache_dir("synth:front_wide,seed=5,lane_closures=0", (64, 96), tmp_path) == base
    assert synth_cache_dir("synth:front_wide,seed=5,lane_closures=0.5", (64, 96), tmp_path) != base
    assert synth_cache_dir("synth:front_wide,seed=5,greenery=0", (64, 96), tmp_path) == base
    assert synth_cache_dir("synth:front_wide,seed=5,greenery=0.5", (64, 96), tmp_path) != base


def test_preview_pictures_follow_the_camera_layout(frame):
    """The documentation pictures (``python -m perception.data.synth.preview``): the six cameras in
    the 2x3 nuScenes layout, depth black exactly where it is invalid, the ego drawn in red on the BEV."""
    from perception.data.synth.preview import bev_image, depth_mosaic, mosaic

    _, s = frame
    names = s.camera_names
    m = mosaic(s)
    assert m.shape == (2 * H, 3 * W, 3)
    assert np.array_equal(m[:H, W:2 * W], s.images[names.index("front")])
    assert np.array_equal(m[H:, :W], s.images[names.index("back_left")])
    d = depth_mosaic(s)
    invalid = s.depth[names.index("front")] <= 0
    assert invalid.any() and (d[:H, W:2 * W][invalid] == 0).all() and (d[:H, W:2 * W][~invalid].max(-1) > 0).all()
    bev = bev_image(s, scale=2)
    h, w = s.extras["bev"]["drivable"].shape
    assert bev.shape == (2 * h, 2 * w, 3) and tuple(bev[h, w]) == (255, 60, 60)  # ego at the centre


def test_fast_shutter_is_opt_in_and_removes_motion_blur_in_daylight_only():
    """``fast_shutter`` shortens the daylight exposure (less motion blur) on its own random stream:
    at 0 every image is as before, night and dusk keep their long exposures."""
    import cv2

    from perception.data.synth.render import exposure_time
    from perception.train.sources import parse_synth_spec, synth_cache_dir

    def frame(time_of_day: str, p: float):
        cfg = WorldConfig(scenery="suburban", weather="clear", time_of_day=time_of_day, duration=5.0, fast_shutter=p)
        return World(5, cfg).frame()

    assert exposure_time(frame("day", 0.0)) == 1 / 150
    assert exposure_time(frame("day", 1.0)) == 1 / 1000
    assert exposure_time(frame("dusk", 1.0)) == 1 / 60
    assert exposure_time(frame("night", 1.0)) == 1 / 30
    cfg = dict(scenery="suburban", weather="clear", time_of_day="day")
    slow, fast = (SynthDataset("surround6", seed=3, frames=1, size=(128, 224), config=WorldConfig(**cfg, fast_shutter=p))[0]
                  for p in (0.0, 1.0))
    for a, b, za, zb in zip(slow.images, fast.images, slow.depth, fast.depth):
        np.testing.assert_array_equal(za, zb)                  # the same scene ...
        detail = [cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var() for im in (a, b)]
        assert detail[1] >= detail[0] * 0.999                   # ... never blurrier with the fast shutter
    assert any((a != b).any() for a, b in zip(slow.images, fast.images))   # and the side cameras' blur is gone
    assert synth_cache_dir("synth:front_wide,fast_shutter=0", (64, 96)) == synth_cache_dir("synth:front_wide", (64, 96))
    assert synth_cache_dir("synth:front_wide,fast_shutter=1", (64, 96)) != synth_cache_dir("synth:front_wide", (64, 96))
    with pytest.raises(ValueError, match="fast_shutter must be a probability in 0..1"):
        parse_synth_spec("synth:front_wide,fast_shutter=2")
