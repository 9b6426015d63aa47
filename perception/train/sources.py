"""Training data specs: a sample-folder path, ``synth:RIG,key=value,...`` rendered on demand,
``teacher:VIDEO,calib=YAML`` real frames pseudo-labelled by the COCO teacher (cached), or
``video:VIDEO,calib=YAML,height=M`` unlabelled frames for self-supervised depth (cached).
``$SHARED_DATA`` in a teacher or video spec stands for ``$PERCEPTION_SHARED_DATA`` (default
``../shared/data``).

``synth:surround6,frames=2000,seed=1000,episode_frames=4,fps=2`` renders 2000 six-camera frames
of the synthetic world (500 short episodes, 0.5 s apart, so frames are diverse) into a cache
folder keyed by the spec and the image size (``barriers=P``: roadside concrete barriers and
guard rails, ``WorldConfig.barriers``; ``roadworks=P``: runs of plastic road-works barriers,
``WorldConfig.roadworks``; ``shrubs=P``: roadside bushes and planters, ``WorldConfig.shrubs``;
``closures=P``: lines of plastic barriers on the road's edge, ``WorldConfig.closures``;
``lane_closures=P``: lines of water-filled barriers closing the outer lane's edge, parked cars
behind them, ``WorldConfig.lane_closures``; ``greenery=P``: tall hedges in front of town
buildings and larger street trees, ``WorldConfig.greenery``;
``medians=P``: a concrete barrier between the two directions, ``WorldConfig.medians``;
``arcades=P``: town buildings whose upper floors stand on large concrete pillars,
``WorldConfig.arcades``; ``leaves=S``: leaf-scale texture of strength S on near vegetation, ``WorldConfig.leaves``;
``fast_shutter=P``: daylight frames exposed for 1/1000 s, without motion blur, ``WorldConfig.fast_shutter``; all
default 0). ``render_scale=F`` (1..4, default 1) renders at F times the network input, so
training crops are downsampled as real frames are (:func:`render_size`). Rendering is resumable:
complete frames already in the cache are kept, so an interrupted render continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import functools
import logging
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from perception.data.sample_folder import SampleFolder, write_sample
from perception.geometry.source_camera import DEFAULT_HFOV_DEG, calibration_beside
from perception.utils.image_io import write_jpeg

log = logging.getLogger(__name__)

CACHE_ROOT = Path(os.environ.get("PERCEPTION_CACHE", "runs/cache"))
WORLD_KEYS = ("barriers", "roadworks", "shrubs", "closures", "medians", "arcades", "leaves", "lane_closures", "greenery",
              "fast_shutter")  # WorldConfig, 0..1; 0 changes nothing
SYNTH_KEYS = {"frames": int, "seed": int, "episode_frames": int, "fps": float, "repeat": int, "render_scale": float,
              **{k: float for k in WORLD_KEYS}}
TEACHER_KEYS = {"calib": str, "every": int, "teacher": str, "score": float, "repeat": int, "tiles": int, "far": float,
                "contact": int}
# teacher keys added after caches existed, with their defaults: at the default a key stays out of
# the cache key, so those caches stay valid
TEACHER_KEYS_ADDED_LATER = {"far": 0.0, "contact": 1}
VIDEO_KEYS = {"calib": str, "camera": str, "height": float, "every": int, "frames": int, "repeat": int}
SHARED_DATA = Path(os.environ.get("PERCEPTION_SHARED_DATA", "../shared/data"))


def _parse_options(spec: str, parts: list[str], known: dict[str, type], opts: dict[str, Any]) -> dict[str, Any]:
    """``key=value`` parts of a data spec into ``opts``, typed by ``known``; clear errors."""
    for p in parts:
        key, _, value = p.partition("=")
        if key not in known:
            raise ValueError(f"data spec {spec!r}: unknown key {key!r} (known: {sorted(known)})")
        try:
            opts[key] = known[key](value)
        except ValueError:
            raise ValueError(f"data spec {spec!r}: {key}={value!r} is not a {known[key].__name__}") from None
    return opts


def parse_synth_spec(spec: str) -> tuple[str, dict[str, float | int]]:
    """``synth:RIG,k=v,...`` -> (rig, options); raises ValueError naming a bad key."""
    body = spec[len("synth:"):]
    parts = [p for p in body.split(",") if p]
    if not parts:
        raise ValueError(f"data spec {spec!r}: expected synth:RIG[,key=value...]")
    opts = {"frames": 1000, "seed": 1000, "episode_frames": 4, "fps": 2.0, "repeat": 1, "render_scale": 1.0,
            **{k: 0.0 for k in WORLD_KEYS}}
    opts = _parse_options(spec, parts[1:], SYNTH_KEYS, opts)
    if not 1.0 <= opts["render_scale"] <= 4.0:
        raise ValueError(f"data spec {spec!r}: render_scale must be in 1..4")
    for key in WORLD_KEYS:
        if not 0.0 <= opts[key] <= 1.0:
            kind = "a strength" if key == "leaves" else "a probability"
            raise ValueError(f"data spec {spec!r}: {key} must be {kind} in 0..1")
    return parts[0], opts


def render_size(opts: dict[str, float | int], size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) a synthetic spec's frames are rendered at for the network input ``size``: its
    ``render_scale`` option (``opts`` from :func:`parse_synth_spec`) times it. Rendered at the
    input size, most training crops are zoomed in (upsampled) and softer than a real frame, which
    is always downsampled to the input; a model trained on them reads a real frame's crisp detail
    as distance (docs/training.md, "Real roads")."""
    f = float(opts["render_scale"])
    return (int(round(size[0] * f)), int(round(size[1] * f)))


def synth_cache_dir(spec: str, size: tuple[int, int], cache_root: Path | None = None) -> Path:
    """Cache folder of a spec for the network input ``size``. Frame i depends only on (rig, seed,
    episode_frames, fps, rendered size), not on the frame count, so the key leaves ``frames`` out:
    asking for more frames later renders only the new ones."""
    rig, opts = parse_synth_spec(spec)
    size = render_size(opts, size)
    ident = f"{rig}|{opts['seed']}|{opts['episode_frames']}|{opts['fps']}|{size[0]}x{size[1]}|v1"
    for key in WORLD_KEYS:    # worlds without them keep their old keys
        if opts[key]:
            ident += f"|{key}={opts[key]}"
    key = hashlib.sha1(ident.encode()).hexdigest()[:10]
    return (cache_root or CACHE_ROOT) / f"synth-{Path(rig).stem}-{key}"


def render_synth(spec: str, size: tuple[int, int], cache_root: Path | None = None,
                 progress: Callable[[int, int], None] | None = None, workers: int | None = None) -> Path:
    """Render (or finish rendering) the synthetic spec into its cache folder; returns it.

    ``workers`` processes (default: one per CPU core) render whole episodes side by side with one
    torch thread each: the renderer is made of many small tensor ops that two threads share badly,
    so two single-threaded processes render about 1.5-2x faster than one process with two threads.
    """
    rig, opts = parse_synth_spec(spec)
    out = synth_cache_dir(spec, size, cache_root)
    size = render_size(opts, size)
    out.mkdir(parents=True, exist_ok=True)
    frames = int(opts["frames"])
    done = {p.parent.name for p in out.glob("*/labels.json")}
    todo = [i for i in range(frames) if f"{i:06d}" not in done]
    if not todo:
        return out
    log.info("rendering %d of %d synthetic frames into %s", len(todo), frames, out)
    args = (rig, int(opts["seed"]), frames, tuple(size), float(opts["fps"]), int(opts["episode_frames"]),
            tuple(float(opts[k]) for k in WORLD_KEYS), str(out))
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    if workers == 1:
        for n, i in enumerate(todo):
            _render_frames(args, [i])
            if progress:
                progress(frames - len(todo) + n + 1, frames)
        return out
    # whole episodes per job (a worker steps each episode's world once), in frame order
    ep = int(opts["episode_frames"])
    jobs: dict[int, list[int]] = {}
    for i in todo:
        jobs.setdefault(i // ep, []).append(i)
    ctx = multiprocessing.get_context("spawn")  # fork after OpenMP has started is unsafe
    n_done = frames - len(todo)
    with ctx.Pool(workers, initializer=_init_render_worker) as pool:
        for count in pool.imap(functools.partial(_render_frames, args), jobs.values()):
            n_done += count
            if progress:
                progress(n_done, frames)
    return out


_WORKER_DATASETS: dict[tuple, Any] = {}


def _init_render_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _render_frames(args: tuple, indices: list[int]) -> int:
    """Render frames ``indices`` of the dataset ``args`` into its cache folder (one process)."""
    from perception.data.synth import SynthDataset

    from perception.data.synth.scene import WorldConfig

    rig, seed, frames, size, fps, episode_frames, world, out = args
    key = args
    if key not in _WORKER_DATASETS:
        _WORKER_DATASETS.clear()
        _WORKER_DATASETS[key] = SynthDataset(rig, seed=seed, frames=frames, size=size, fps=fps,
                                             episode_frames=episode_frames, config=WorldConfig(**dict(zip(WORLD_KEYS, world))))
    ds = _WORKER_DATASETS[key]
    for i in indices:
        sample = ds[i]
        sample.extras["depth_dense"] = True
        write_sample(sample, Path(out) / f"{i:06d}")
    return len(indices)


def parse_teacher_spec(spec: str) -> tuple[str, dict[str, str | int | float]]:
    """``teacher:SOURCE[,calib=YAML][,every=N][,teacher=ONNX][,score=0.5][,tiles=1][,far=PX][,contact=1]`` -> (source, options).
    ``tiles=1`` (default) also runs the teacher on 2x2 tiles, so distant cars are labels or ignore
    regions rather than background (:meth:`perception.train.teacher.YoloxTeacher.tiled`).
    ``far=PX`` (default 0: off) makes the band around the horizon where a car would be under PX
    pixels tall an ignore region (:func:`perception.train.teacher.far_ignore_band`).
    ``contact=0`` leaves out the sparse depth of the vehicles' road contact
    (:func:`perception.train.teacher.contact_depth`): the frames then teach 2D boxes only."""
    body = spec[len("teacher:"):].replace("$SHARED_DATA", str(SHARED_DATA))
    parts = [p for p in body.split(",") if p]
    if not parts:
        raise ValueError(f"data spec {spec!r}: expected teacher:SOURCE[,key=value...]")
    opts: dict[str, str | int | float] = {"every": 1, "teacher": str(SHARED_DATA / "weights" / "yolox_nano.onnx"),
                                          "score": 0.5, "repeat": 1, "tiles": 1, "far": 0.0, "contact": 1}
    _parse_options(spec, parts[1:], TEACHER_KEYS, opts)
    if opts["far"] < 0:
        raise ValueError(f"data spec {spec!r}: far must be >= 0 pixels")
    if opts["contact"] not in (0, 1):
        raise ValueError(f"data spec {spec!r}: contact must be 0 or 1")
    return parts[0], opts


def pseudo_label(spec: str, cache_root: Path | None = None, progress: Callable[[int, int], None] | None = None
                 ) -> Path:
    """Run the COCO teacher over a video / image folder and cache the frames with 2D pseudo-labels
    and the sparse depth of the vehicles' road contact (:func:`perception.train.teacher.contact_depth`;
    the camera follows ``perception run``'s policy, :func:`perception.geometry.camera_for_source`,
    so an uncalibrated clip gets the mount measured on its lane lines). 3D box attributes come from
    the synthetic data."""
    from perception.data.readers.video import VideoReader
    from perception.geometry.source_camera import camera_for_source
    from perception.train.teacher import YoloxTeacher, contact_depth, with_far_ignore

    source, opts = parse_teacher_spec(spec)
    ident = {k: v for k, v in opts.items() if k != "repeat" and TEACHER_KEYS_ADDED_LATER.get(k) != v}
    key = hashlib.sha1(f"{source}|{sorted(ident.items())}|v2".encode()).hexdigest()[:10]
    out = (cache_root or CACHE_ROOT) / f"teacher-{Path(source).stem}-{key}"
    if (out / "meta.json").is_file():
        return out
    teacher = YoloxTeacher(opts["teacher"])
    reader = VideoReader(source, camera_for_source(source, opts.get("calib")))
    total = len(reader)
    n = 0
    for i, sample in enumerate(reader):
        if i % int(opts["every"]):
            continue
        sample.boxes2d = [teacher.pseudo_labels(img, score_thresh=float(opts["score"]), tiles=bool(opts["tiles"]))
                          for img in sample.images]
        depth = [contact_depth(b, cam) if opts["contact"] else None for b, cam in zip(sample.boxes2d, sample.cameras)]
        if opts["far"]:
            sample.boxes2d = [with_far_ignore(b, cam, float(opts["far"])) for b, cam in zip(sample.boxes2d, sample.cameras)]
        sample.depth = [d if d is not None else np.zeros((c.height, c.width), np.float32)
                        for d, c in zip(depth, sample.cameras)] if any(d is not None for d in depth) else None
        sample.extras["depth_dense"] = False
        write_sample(sample, out / f"{n:06d}", with_depth=sample.depth is not None)
        n += 1
        if progress:
            progress(i + 1, total)
    (out / "meta.json").write_text(json.dumps({"format": "perception-samples", "version": 1, "count": n,
                                               "spec": spec, "teacher": str(opts["teacher"])}))
    return out


def resolve_data(specs: list[str], size: tuple[int, int], render: bool = True,
                 progress: Callable[[int, int], None] | None = None) -> list[tuple[str, int | None, int]]:
    """Turn data specs into (sample-folder path, frame limit, repeat) triples, rendering or
    pseudo-labelling when ``render``. A synthetic cache may hold more frames than a spec asks for
    (an earlier, longer render): the limit keeps training to the first ``frames``. ``repeat=N``
    lists a small set N times per epoch (e.g. a few hundred real frames among thousands of
    synthetic ones). ``video:`` specs are skipped here (:func:`resolve_video`)."""
    out: list[tuple[str, int | None, int]] = []
    for spec in specs:
        if spec.startswith("video:"):
            continue  # unlabelled video feeds the self-supervised depth loss: see resolve_video
        if spec.startswith("teacher:"):
            repeat = int(parse_teacher_spec(spec)[1]["repeat"])
            path = pseudo_label(spec, progress=progress) if render else None
            out.append((str(path), None, repeat))
        elif spec.startswith("synth:"):
            opts = parse_synth_spec(spec)[1]
            path = render_synth(spec, size, progress=progress) if render else synth_cache_dir(spec, size)
            out.append((str(path), int(opts["frames"]), int(opts["repeat"])))
        else:
            SampleFolder(spec)  # clear error now if it is missing or empty
            out.append((spec, None, 1))
    return out


# ----------------------------------------------------------------------------- unlabelled video
def parse_video_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``video:SOURCE[,calib=YAML][,camera=NAME][,height=M][,every=N][,frames=N][,repeat=N]``
    -> (source, options); raises ValueError naming a bad key. ``SOURCE`` is a video file, an
    image folder or a glob (anything :class:`~perception.data.readers.video.VideoReader` reads),
    or a folder of already decoded frames (:func:`is_decoded_frames`; its ``meta.json`` holds
    the camera, and may list the triplets)."""
    body = spec[len("video:"):].replace("$SHARED_DATA", str(SHARED_DATA))
    parts = [p for p in body.split(",") if p]
    if not parts:
        raise ValueError(f"data spec {spec!r}: expected video:SOURCE[,key=value...]")
    opts: dict[str, Any] = {"calib": None, "camera": None, "height": None, "every": 1, "frames": None, "repeat": 1}
    _parse_options(spec, parts[1:], VIDEO_KEYS, opts)
    if opts["every"] < 1 or opts["repeat"] < 1 or (opts["frames"] is not None and opts["frames"] < 3):
        raise ValueError(f"data spec {spec!r}: every and repeat must be >= 1 and frames >= 3")
    if opts["height"] is not None and not 0.1 <= opts["height"] <= 10.0:
        raise ValueError(f"data spec {spec!r}: height={opts['height']} m is not a plausible camera height")
    return parts[0], opts


def _file_ident(path: str | None) -> str:
    """Path, size and mtime of a file (so a replaced video or calibration is decoded again)."""
    if path is None:
        return "-"
    p = Path(path)
    if not p.is_file():
        return str(p.resolve())
    st = p.stat()
    return f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def video_cache_dir(spec: str, size: tuple[int, int], cache_root: Path | None = None) -> Path:
    """Cache folder of a video spec at network size ``size``; ``height`` and ``repeat`` are
    applied when reading, so they are not part of the key."""
    source, opts = parse_video_spec(spec)
    ident = (f"{_file_ident(source)}|{_file_ident(opts['calib'])}|{opts['camera']}|{opts['every']}|{opts['frames']}|"
             f"{size[0]}x{size[1]}|v2")
    key = hashlib.sha1(ident.encode()).hexdigest()[:10]
    return (cache_root or CACHE_ROOT) / f"video-{Path(source).stem}-{key}"


def resize_to_cover(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` at the smallest size (aspect kept) that covers the network input ``size`` = (H, W):
    how frames for the self-supervised loss are stored (the loss crops from there)."""
    H, W = size
    h, w = image.shape[:2]
    s = max(W / w, H / h)
    cover = (max(W, round(w * s)), max(H, round(h * s)))
    return cv2.resize(image, cover, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


def decode_video(spec: str, size: tuple[int, int], cache_root: Path | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Path:
    """Decode a video spec once into its cache folder; returns it.

    Frames are undistorted when the calibration has distortion (the warp of the self-supervised
    loss is pinhole), resized to the smallest size that covers the network input ``size``
    (aspect kept) and stored as JPEG (quality 95) with ``meta.json`` (the camera at that size,
    written last: a folder without it is decoded again). The video itself is read in place,
    never copied.
    """
    from perception.data.readers.video import VideoReader

    source, opts = parse_video_spec(spec)
    out = video_cache_dir(spec, size, cache_root)
    if (out / "meta.json").is_file():
        return out
    from perception.geometry.source_camera import camera_for_source

    # perception run's camera policy: without calib=, the mount measured on the lane lines
    reader = VideoReader(source, camera_for_source(source, opts["calib"], camera=opts["camera"]),
                         stride=int(opts["every"]), max_frames=opts["frames"])
    (out / "frames").mkdir(parents=True, exist_ok=True)
    log.info("decoding %s into %s (every %d-th frame)", source, out, opts["every"])
    total, n, cam_out = len(reader), 0, None
    for sample in reader:
        img, cam = sample.images[0], sample.cameras[0]
        if cam.has_distortion:
            img, cam = cam.undistort(img), cam.pinhole()
        img = resize_to_cover(img, size)
        if cam_out is None:
            cam_out = cam.scaled(img.shape[1], img.shape[0])
        elif (img.shape[1], img.shape[0]) != cam_out.size:
            raise ValueError(f"{source}: frame size changes within the source (frame {n})")
        write_jpeg(out / "frames" / f"{n:06d}.jpg", img, 95)
        n += 1
        if progress:
            progress(n, total)
    if n < 3 or cam_out is None:
        raise ValueError(f"data spec {spec!r}: {n} frames decoded, need at least 3 for (t-1, t, t+1) triplets")
    guessed = opts["calib"] is None and calibration_beside(source) is None
    (out / "meta.json").write_text(json.dumps({
        "format": "perception-video-frames", "version": 1, "count": n, "spec": spec, "source": source,
        "camera": cam_out.to_dict(), "guessed_camera": guessed}))
    return out


@dataclass
class VideoFrames:
    """A decoded video spec: cached frames at cover size, the pinhole camera at that size, the
    camera height above the ground (metres) and how often to list its triplets per epoch."""

    root: Path
    count: int
    K: np.ndarray
    T_ego_cam: np.ndarray
    height: float
    repeat: int
    triplets: list[tuple[int, int, int]] | None = None  # explicit (t-1, t, t+1) frame indices; None: consecutive

    def triplet_indices(self) -> list[tuple[int, int, int]]:
        """Every (t-1, t, t+1) triplet of frame indices of this folder."""
        if self.triplets is not None:
            return list(self.triplets)
        return [(t - 1, t, t + 1) for t in range(1, self.count - 1)]

    @property
    def up_cam(self) -> np.ndarray:
        """The ego +z (up) axis in camera coordinates."""
        return self.T_ego_cam[:3, :3].T @ np.array([0.0, 0.0, 1.0])

    def frame_path(self, i: int) -> Path:
        return self.root / "frames" / f"{i:06d}.jpg"


def resolve_video(specs: list[str], size: tuple[int, int], render: bool = True, cache_root: Path | None = None,
                  progress: Callable[[int, int], None] | None = None) -> list[VideoFrames]:
    """The ``video:`` specs among ``specs``, decoded (when ``render``) into their caches.

    Camera height: the ``height=`` key, else the calibration's ``T_ego_cam`` z (ego origin is on
    the ground); without a calibration the default camera of
    :func:`perception.geometry.camera_for_source` (60 deg FOV, the mount measured on the lane
    lines) is used, with a warning, since metric scale is then only as right as that guess.
    """
    from perception.geometry.camera import Camera

    out: list[VideoFrames] = []
    for spec in specs:
        if not spec.startswith("video:"):
            continue
        source, opts = parse_video_spec(spec)
        if is_decoded_frames(source):   # already decoded (e.g. by `perception adapt`): read in place
            root = Path(source)
        else:
            root = decode_video(spec, size, cache_root, progress) if render else video_cache_dir(spec, size, cache_root)
        meta = json.loads((root / "meta.json").read_text())
        cam = Camera.from_dict(meta["camera"], str(root / "meta.json"))
        if meta.get("guessed_camera"):
            log.warning("%s: no calibration (calib=...): using a guessed camera (the default: %.0f deg horizontal FOV, "
                        "%.2f m high, pitch and height from the lane lines where they are clear); self-supervised depth is "
                        "only as metric as that guess", source,
                        DEFAULT_HFOV_DEG, cam.T_ego_cam[2, 3])
        height = float(opts["height"]) if opts["height"] is not None else float(cam.T_ego_cam[2, 3])
        if not 0.1 <= height <= 10.0:
            raise ValueError(f"data spec {spec!r}: camera height {height:.2f} m from the calibration's T_ego_cam is "
                             "implausible; give height=M")
        triplets = [tuple(int(i) for i in t) for t in meta["triplets"]] if meta.get("triplets") else None
        if triplets is not None and any(len(t) != 3 or not all(0 <= i < int(meta["count"]) for i in t)
                                        for t in triplets):
            raise ValueError(f"{root / 'meta.json'}: 'triplets' must list (t-1, t, t+1) frame indices below 'count'")
        out.append(VideoFrames(root, int(meta["count"]), cam.K.copy(), cam.T_ego_cam.copy(), height,
                               int(opts["repeat"]), triplets))
    return out


def is_decoded_frames(source: str | Path) -> bool:
    """Whether ``source`` is a folder of decoded frames (``meta.json`` of format
    ``perception-video-frames``, as :func:`decode_video` and ``perception adapt`` write)."""
    meta = Path(source) / "meta.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == "perception-video-frames"
    except (OSError, json.JSONDecodeError):
        return False
