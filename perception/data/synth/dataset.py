"""Synthetic datasets: an iterable of rendered ``Sample``s for training, a writer of dataset
folders (what ``perception synth`` produces) and a reader that turns such a folder back into
``Sample``s.

Folder layout (``perception-synth`` format, version 1)::

    DIR/meta.json              format, frames, fps, seed, size, cameras, classes, encodings, command
    DIR/rig.yaml               the rig scaled to the rendered size; each camera's ``source`` is its video
    DIR/<camera>.mp4           one compressed video per camera (mp4v)   [--format video]
    DIR/images/<camera>/000000.jpg                                        [--format images]
    DIR/labels.jsonl           one JSON object per frame (see :func:`frame_record`)
    DIR/depth/<camera>/000000.png   uint16 z-depth, metres = value / 256, 0 = invalid (optional,
                               possibly downscaled by ``depth_scale`` with nearest sampling)
    DIR/bev/000000.png         BEV ground truth: R = drivable, G = lane paint, B = occupancy
                               (100 static, 200 object) on the grid in meta.json (optional)
    DIR/README.md
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import multiprocessing
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np
import torch

from perception.data.classes import CLASSES
from perception.data.sample import Boxes2D, Boxes3D, Sample
from perception.data.synth.labels import BevGrid
from perception.data.synth.render import Renderer, RenderOptions
from perception.data.synth.rigs import make_front_wide, make_surround6
from perception.data.synth.scene import World, WorldConfig
from perception.geometry import Rig

log = logging.getLogger(__name__)

FORMAT = "perception-synth"
DEPTH_SCALE = 256.0          # uint16 value / 256 = metres (KITTI convention), max ~256 m
BUILTIN_RIGS: dict[str, Callable[[], Rig]] = {"surround6": make_surround6, "front_wide": make_front_wide}
DEFAULT_SIZE = (256, 448)


def resolve_rig(rig: Rig | str | Path | None, size: tuple[int, int] | None = None) -> Rig:
    """A ``Rig`` from an object, a built-in name (surround6, front_wide) or a YAML path,
    scaled to ``size`` = (H, W) when given (no rig and no size: surround6 at 256x448)."""
    if rig is None:
        rig = make_surround6()
        size = size or DEFAULT_SIZE
    elif isinstance(rig, (str, Path)):
        name = str(rig)
        rig = BUILTIN_RIGS[name]() if name in BUILTIN_RIGS else Rig.load(name)
    if size is not None:
        h, w = size
        rig = rig.scaled(int(w), int(h))
    return rig


def episode_seed(seed: int, episode: int) -> int:
    """Independent world seed of episode ``episode`` of a dataset seeded ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(episode), 0xE915]).generate_state(1)[0] & 0x7FFFFFFF)


class SynthDataset:
    """Rendered frames of consecutive episodes (random access, fastest when sequential).

    Frame ``i`` is step ``i % episode_frames`` of episode ``i // episode_frames``; each
    episode is a new world (seeded from ``seed`` and the episode index) observed at ``fps``.
    """

    def __init__(self, rig: Rig | str | Path | None = None, seed: int = 0, frames: int = 100_000,
                 size: tuple[int, int] | None = None, fps: float = 10.0, episode_frames: int = 100,
                 config: WorldConfig | None = None, device: str | torch.device = "cpu",
                 options: RenderOptions | None = None) -> None:
        self._init_args = dict(rig=rig, seed=seed, frames=frames, size=size, fps=fps, episode_frames=episode_frames,
                               config=config, device=device, options=options)
        self.rig = resolve_rig(rig, size)
        self.seed = int(seed)
        self.frames = int(frames)
        self.fps = float(fps)
        self.episode_frames = max(1, int(episode_frames))
        base = config or WorldConfig()
        self.config = WorldConfig(**{**base.__dict__, "duration": max(base.duration, self.episode_frames / self.fps + 2)})
        self.renderer = Renderer(self.rig, device, options)
        self._world: World | None = None
        self._episode = -1

    def __len__(self) -> int:
        return self.frames

    def world_at(self, index: int) -> World:
        """The world advanced to frame ``index`` (reuses the current episode when possible)."""
        if not 0 <= index < self.frames:
            raise IndexError(f"frame {index} out of range (dataset has {self.frames})")
        ep, step = divmod(index, self.episode_frames)
        if self._world is None or ep != self._episode or self._world.index > step:
            self._world = World(episode_seed(self.seed, ep), self.config)
            self._episode = ep
        while self._world.index < step:
            self._world.step(1.0 / self.fps)
        return self._world

    def __getitem__(self, index: int) -> Sample:
        if index < 0:
            index += self.frames
        world = self.world_at(index)
        s = self.renderer(world)
        s.timestamp = index / self.fps
        s.frame_id = f"synth-{self.seed}-{index:06d}"
        s.extras["episode"] = self._episode
        s.extras["episode_step"] = world.index
        return s

    def iter_parallel(self, workers: int, indices: Sequence[int] | None = None, chunk: int = 4
                      ) -> Iterator[Sample]:
        """Frames ``indices`` (default: all) in order, rendered by ``workers`` processes with one
        torch thread each. The renderer is many small tensor ops that two threads share badly: on
        our 2-core machines two single-threaded processes render about 1.5-2x the frames/s of one
        process with two threads. Each worker steps its own copy of the world, so the pixels are
        identical to ``self[i]``. CPU only (on CUDA use one process)."""
        indices = list(range(self.frames)) if indices is None else [int(i) for i in indices]
        if workers <= 1 or len(indices) < 2 or self.renderer.device.type != "cpu":
            for i in indices:
                yield self[i]
            return
        chunks = [indices[k:k + chunk] for k in range(0, len(indices), chunk)]
        ctx = multiprocessing.get_context("spawn")  # fork after OpenMP has started is unsafe
        with ctx.Pool(workers, initializer=_init_worker, initargs=(self._init_args,)) as pool:
            for samples in pool.imap(_render_chunk, chunks):
                yield from samples

    def __iter__(self) -> Iterator[Sample]:
        for i in range(self.frames):
            yield self[i]


# ---------------------------------------------------------------------------- writing
_WORKER_DATASET: SynthDataset | None = None


def _init_worker(init_args: dict) -> None:
    global _WORKER_DATASET
    torch.set_num_threads(1)
    _WORKER_DATASET = SynthDataset(**init_args)


def _render_chunk(indices: list[int]) -> list[Sample]:
    assert _WORKER_DATASET is not None
    return [_WORKER_DATASET[i] for i in indices]


def _r(a: np.ndarray | None, nd: int = 3) -> Any:
    if a is None:
        return None
    a = np.asarray(a)
    if a.dtype.kind == "f":
        return np.round(a.astype(np.float64), nd).tolist()
    return a.tolist()


def frame_record(sample: Sample, index: int) -> dict[str, Any]:
    """JSON-able labels of one frame: 2D boxes per camera, 3D boxes (ego frame), ego pose."""
    cams = {}
    for cam, b in zip(sample.cameras, sample.boxes2d or [Boxes2D.empty()] * len(sample.cameras)):
        d = {"boxes": _r(b.boxes, 1), "labels": _r(b.labels)}
        for k in ("truncation", "occlusion", "visibility", "instance_ids", "depth", "center_cam", "size", "yaw_cam",
                  "ignore"):
            v = getattr(b, k)
            if v is not None:
                d[k] = _r(v, 3)
        cams[cam.name] = d
    b3 = sample.boxes3d if sample.boxes3d is not None else Boxes3D.empty()
    rec = {"frame": index, "timestamp": round(float(sample.timestamp), 4), "frame_id": sample.frame_id,
           "cameras": cams,
           "boxes3d": {"center": _r(b3.center), "size": _r(b3.size), "yaw": _r(b3.yaw, 4), "labels": _r(b3.labels),
                       "velocity": _r(b3.velocity, 2), "instance_ids": _r(b3.instance_ids)}}
    ex = sample.extras
    if "T_world_ego" in ex:
        rec["ego"] = {"T_world_ego": _r(ex["T_world_ego"], 4), "velocity": _r(ex.get("ego_velocity"), 3)}
    for k in ("episode", "episode_step", "weather", "time_of_day"):
        if k in ex:
            rec[k] = ex[k] if not isinstance(ex[k], np.generic) else ex[k].item()
    return rec


def encode_depth(depth: np.ndarray, scale: int = 1) -> np.ndarray:
    """uint16 PNG payload: metres * 256 (0 = invalid or beyond 255.99 m), nearest-downscaled."""
    d = depth[scale // 2::scale, scale // 2::scale] if scale > 1 else depth
    v = np.round(d * DEPTH_SCALE)
    v[(d <= 0) | (v > 65535)] = 0
    return v.astype(np.uint16)


def encode_bev(bev: dict[str, np.ndarray]) -> np.ndarray:
    occ = bev["occupancy"].astype(np.uint16) * 100
    return np.stack([bev["drivable"] * 255, bev["lanes"] * 255, occ.clip(0, 255)], -1).astype(np.uint8)


class DatasetWriter:
    """Writes ``Sample``s of one rig into a ``perception-synth`` folder."""

    def __init__(self, out: str | Path, rig: Rig, fps: float, fmt: str = "video", depth: bool = True,
                 depth_scale: int = 1, bev: bool = True, jpeg_quality: int = 90) -> None:
        if fmt not in ("video", "images"):
            raise ValueError(f"format must be 'video' or 'images', got {fmt!r}")
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.rig, self.fps, self.fmt = rig, fps, fmt
        self.depth, self.depth_scale, self.bev, self.q = depth, max(1, int(depth_scale)), bev, jpeg_quality
        self.count = 0
        self._writers: dict[str, cv2.VideoWriter] = {}
        self._labels = open(self.out / "labels.jsonl", "w")
        src_rig = copy.deepcopy(rig)
        for cam in src_rig.cameras:
            cam.source = f"{cam.name}.mp4" if fmt == "video" else f"images/{cam.name}/*.jpg"
        src_rig.save(self.out / "rig.yaml")
        if fmt == "video":
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            for cam in rig.cameras:
                vw = cv2.VideoWriter(str(self.out / f"{cam.name}.mp4"), fourcc, float(fps), (cam.width, cam.height))
                if not vw.isOpened():
                    raise RuntimeError(f"cannot open a video writer for {self.out / f'{cam.name}.mp4'}")
                self._writers[cam.name] = vw

    def write(self, sample: Sample) -> None:
        i = self.count
        for cam, img in zip(sample.cameras, sample.images):
            bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            if self.fmt == "video":
                self._writers[cam.name].write(bgr)
            else:
                p = self.out / "images" / cam.name / f"{i:06d}.jpg"
                p.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(p), bgr, [cv2.IMWRITE_JPEG_QUALITY, self.q])
        if self.depth and sample.depth is not None:
            for cam, d in zip(sample.cameras, sample.depth):
                p = self.out / "depth" / cam.name / f"{i:06d}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(p), encode_depth(d, self.depth_scale), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if self.bev and "bev" in sample.extras:
            p = self.out / "bev" / f"{i:06d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(p), cv2.cvtColor(encode_bev(sample.extras["bev"]), cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_PNG_COMPRESSION, 9])
        self._labels.write(json.dumps(frame_record(sample, i), separators=(",", ":")) + "\n")
        self.count += 1

    def close(self, meta: dict[str, Any] | None = None, bev_grid: BevGrid | None = None) -> None:
        for vw in self._writers.values():
            vw.release()
        self._writers.clear()
        self._labels.close()
        cam0 = self.rig.cameras[0]
        m = {"format": FORMAT, "version": 1, "frames": self.count, "fps": self.fps,
             "size": [cam0.height, cam0.width], "rig": "rig.yaml", "cameras": self.rig.names,
             "classes": list(CLASSES), "media": self.fmt,
             "videos": {c.name: f"{c.name}.mp4" for c in self.rig.cameras} if self.fmt == "video" else None,
             "labels": "labels.jsonl",
             "depth": ({"dir": "depth", "encoding": "uint16 png, metres = value / 256, 0 = invalid",
                        "scale": self.depth_scale} if self.depth else None),
             "bev": ({"dir": "bev", "encoding": "rgb png: R drivable*255, G lanes*255, B occupancy*100",
                      "length_m": bev_grid.length, "width_m": bev_grid.width, "resolution": bev_grid.res,
                      "orientation": "up = ego forward, left = ego left, ego at the centre"}
                     if self.bev and bev_grid is not None else None),
             "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        m.update(meta or {})
        (self.out / "meta.json").write_text(json.dumps(m, indent=2))
        readme = [f"# Synthetic drive ({self.count} frames, {len(self.rig)} cameras, {cam0.height}x{cam0.width}, "
                  f"{self.fps:g} Hz)", "",
                  "Rendered by the procedural world of `perception.data.synth` (see docs/synthetic.md).", ""]
        if m.get("command"):
            readme += ["Command:", "", "```", str(m["command"]), "```", ""]
        readme += ["Files: `meta.json`, `rig.yaml` (cameras scaled to the rendered size; `source` = media), "
                   "per-camera " + ("videos `<camera>.mp4`" if self.fmt == "video" else "JPEGs `images/<camera>/`") +
                   ", `labels.jsonl` (2D boxes per camera, 3D boxes in the ego frame, ego pose, timestamp)" +
                   (", `depth/<camera>/*.png` (uint16, metres = value / 256, 0 = invalid"
                    + (f", downscaled x{self.depth_scale}" if self.depth_scale > 1 else "") + ")" if self.depth else "") +
                   (", `bev/*.png` (R drivable, G lanes, B occupancy)" if self.bev else "") + ".",
                   "", "Read it back with `perception.data.synth.SynthFolder(DIR)`."]
        (self.out / "README.md").write_text("\n".join(readme) + "\n")


# ---------------------------------------------------------------------------- reading
def _boxes2d(d: dict[str, Any]) -> Boxes2D:
    kw = {}
    for k, dt in (("truncation", np.float32), ("occlusion", np.int64), ("visibility", np.float32),
                  ("instance_ids", np.int64), ("depth", np.float32), ("center_cam", np.float32),
                  ("size", np.float32), ("yaw_cam", np.float32), ("ignore", bool)):
        if d.get(k) is not None:
            kw[k] = np.asarray(d[k], dt)
    if "center_cam" in kw:
        kw["center_cam"] = kw["center_cam"].reshape(-1, 3)
    if "size" in kw:
        kw["size"] = kw["size"].reshape(-1, 3)
    return Boxes2D(np.asarray(d["boxes"], np.float32).reshape(-1, 4), np.asarray(d["labels"], np.int64), **kw)


def _boxes3d(d: dict[str, Any]) -> Boxes3D:
    return Boxes3D(np.asarray(d["center"], np.float64).reshape(-1, 3), np.asarray(d["size"], np.float64).reshape(-1, 3),
                   np.asarray(d["yaw"], np.float64), np.asarray(d["labels"], np.int64),
                   velocity=np.asarray(d["velocity"], np.float64).reshape(-1, 2) if d.get("velocity") is not None else None,
                   instance_ids=np.asarray(d["instance_ids"], np.int64) if d.get("instance_ids") is not None else None)


class SynthFolder:
    """Reads a ``perception-synth`` folder back into ``Sample``s (sequential decoding; random
    access re-seeks the videos). Depth stored downscaled is upsampled with nearest sampling."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta_p = self.root / "meta.json"
        if not meta_p.is_file():
            raise FileNotFoundError(f"{self.root}: not a synthetic dataset folder (no meta.json)")
        self.meta = json.loads(meta_p.read_text())
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{meta_p}: format is {self.meta.get('format')!r}, expected {FORMAT!r}")
        self.rig = Rig.load(self.root / self.meta.get("rig", "rig.yaml"))
        with open(self.root / self.meta.get("labels", "labels.jsonl")) as f:
            self.records = [json.loads(line) for line in f if line.strip()]
        self._caps: dict[str, cv2.VideoCapture] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self.records)

    def _read_images(self, index: int) -> list[np.ndarray]:
        imgs = []
        if self.meta.get("media", "video") == "images":
            for cam in self.rig.cameras:
                bgr = cv2.imread(str(self.root / "images" / cam.name / f"{index:06d}.jpg"), cv2.IMREAD_COLOR)
                if bgr is None:
                    raise FileNotFoundError(f"{self.root}: missing image of camera {cam.name} frame {index}")
                imgs.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            return imgs
        if index != self._next:
            for cap in self._caps.values():
                cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        for cam in self.rig.cameras:
            cap = self._caps.get(cam.name)
            if cap is None:
                cap = self._caps[cam.name] = cv2.VideoCapture(str(self.root / f"{cam.name}.mp4"))
                if index:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, bgr = cap.read()
            if not ok:
                raise IOError(f"{self.root}: cannot decode frame {index} of {cam.name}.mp4")
            imgs.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        self._next = index + 1
        return imgs

    def __getitem__(self, index: int) -> Sample:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range ({len(self)} frames)")
        rec = self.records[index]
        images = self._read_images(index)
        depth = None
        if self.meta.get("depth"):
            depth = []
            for cam in self.rig.cameras:
                raw = cv2.imread(str(self.root / "depth" / cam.name / f"{index:06d}.png"), cv2.IMREAD_UNCHANGED)
                if raw is None:
                    depth = None
                    break
                d = raw.astype(np.float32) / DEPTH_SCALE
                if d.shape != (cam.height, cam.width):
                    d = cv2.resize(d, (cam.width, cam.height), interpolation=cv2.INTER_NEAREST)
                depth.append(d)
        extras: dict[str, Any] = {k: rec[k] for k in ("episode", "episode_step", "weather", "time_of_day") if k in rec}
        if "ego" in rec:
            extras["T_world_ego"] = np.asarray(rec["ego"]["T_world_ego"])
            extras["ego_velocity"] = np.asarray(rec["ego"]["velocity"])
        if self.meta.get("bev"):
            p = self.root / "bev" / f"{index:06d}.png"
            if p.is_file():
                rgb = cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                extras["bev"] = {"drivable": (rgb[..., 0] > 127).astype(np.uint8),
                                 "lanes": (rgb[..., 1] > 127).astype(np.uint8),
                                 "occupancy": np.round(rgb[..., 2] / 100).astype(np.uint8),
                                 "resolution": self.meta["bev"]["resolution"]}
        b2d = [_boxes2d(rec["cameras"][c.name]) for c in self.rig.cameras]
        return Sample(images=images, cameras=list(self.rig.cameras), timestamp=float(rec["timestamp"]), depth=depth,
                      boxes2d=b2d, boxes3d=_boxes3d(rec["boxes3d"]), frame_id=rec.get("frame_id", str(index)),
                      extras=extras)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def close(self) -> None:
        for cap in self._caps.values():
            cap.release()
        self._caps.clear()
