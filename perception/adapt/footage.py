"""A user's footage, read once and split for adaptation: training frames with teacher pseudo-labels,
frame triplets for self-supervised depth, and held-out frames for the before/after report.

The source (a video file, an image folder or a glob) is streamed frame by frame, never loaded
whole, so hours of video work: only the frames that are kept are decoded into RGB arrays and
written, and ``max_frames`` bounds what is kept however long the source is.

**Held-out split.** The source is cut into ``blocks`` contiguous time blocks (at least 10, and
at most a minute each); every ``round(1 / holdout)``-th block is held out. Whole blocks, not
single frames, so the held-out frames are not near-copies of training frames.

**Training frames** are centres ``t`` (spread evenly over the training blocks) of triplets
``(t - gap, t, t + gap)`` that lie inside one block: the centre is written full size with the
teacher's boxes and the depth where its vehicles touch the road
(:func:`perception.train.teacher.contact_depth`) (a sample folder, :mod:`perception.data.sample_folder`), the triplet at the
network's cover size for the self-supervised depth loss (a decoded-frames folder,
:func:`perception.train.sources.is_decoded_frames`, with its triplets listed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from perception.data.readers.video import VideoReader
from perception.data.sample import Sample
from perception.data.sample_folder import write_sample
from perception.geometry.camera import Camera, Rig
from perception.train.sources import resize_to_cover
from perception.train.teacher import YoloxTeacher, contact_depth
from perception.utils.image_io import write_jpeg

log = logging.getLogger(__name__)

FORMAT = "perception-adapt-footage"
VERSION = 3


@dataclass(frozen=True)
class FootagePlan:
    """Which frames of a ``frames``-long source are used, and how."""

    frames: int
    blocks: int
    holdout_every: int          # every this-many-th block is held out (block % holdout_every == holdout_every - 1)
    gap: int                    # source frames between the frames of a triplet
    train_centres: tuple[int, ...]
    heldout: tuple[int, ...]

    def block_of(self, i: int) -> int:
        return i * self.blocks // self.frames

    def is_heldout_block(self, block: int) -> bool:
        return block % self.holdout_every == self.holdout_every - 1


def plan_footage(frames: int, fps: float, *, max_frames: int = 2000, max_heldout: int = 300,
                 holdout: float = 0.2, gap_s: float = 0.1, block_s: float = 60.0) -> FootagePlan:
    """The frames to use from a source of ``frames`` frames at ``fps`` (see the module docstring).

    Raises ValueError when the source is too short to give both training triplets and held-out
    frames."""
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout}")
    if max_frames < 1 or max_heldout < 1:
        raise ValueError("max_frames and max_heldout must be at least 1")
    gap = max(1, round(gap_s * fps))
    blocks = max(10, math.ceil(frames / max(1.0, block_s * fps)))
    blocks = min(blocks, max(1, frames // (2 * gap + 3)))  # every block holds a triplet
    every = max(2, round(1.0 / holdout))
    plan = FootagePlan(frames, blocks, every, gap, (), ())
    train, held = [], []
    for i in range(frames):
        b = plan.block_of(i)
        if plan.is_heldout_block(b):
            held.append(i)
        elif i - gap >= 0 and i + gap < frames and plan.block_of(i - gap) == b == plan.block_of(i + gap):
            train.append(i)
    if blocks < every or not held or not train:
        raise ValueError(f"{frames} frames are too few to hold out a part and train on the rest "
                         f"(need at least {every * (2 * gap + 3)} frames)")
    return FootagePlan(frames, blocks, every, gap, _spread(train, max_frames), _spread(held, max_heldout))


def _spread(items: list[int], n: int) -> tuple[int, ...]:
    """At most ``n`` of ``items``, evenly spread (all when there are fewer)."""
    if len(items) <= n:
        return tuple(items)
    return tuple(items[int(k)] for k in np.linspace(0, len(items) - 1, n).round().astype(int))


@dataclass
class Footage:
    """A prepared footage folder (what :func:`prepare_footage` wrote)."""

    root: Path
    camera: Camera              # the source camera at native size (pinhole when the source is undistorted)
    train_frames: int
    triplets: int
    heldout_frames: int
    source: str
    plan: dict

    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def triplet_dir(self) -> Path:
        return self.root / "triplets"

    @property
    def heldout_dir(self) -> Path:
        return self.root / "heldout"

    @classmethod
    def load(cls, root: Path) -> "Footage":
        meta = json.loads((root / "footage.json").read_text())
        return cls(root, Camera.from_dict(meta["camera"], str(root / "footage.json")), meta["train_frames"],
                   meta["triplets"], meta["heldout_frames"], meta["source"], meta["plan"])


def source_ident(source: str, camera: Camera, settings: dict) -> str:
    """What the prepared folder depends on: the source files (path, size, mtime), the camera and
    the split settings. A prepared folder with another ident is prepared again."""
    p = Path(source)
    files = sorted(p.iterdir()) if p.is_dir() else [p] if p.is_file() else sorted(p.parent.glob(p.name))
    h = hashlib.sha1()
    for f in files[:100000]:
        st = f.stat()
        h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}|".encode())
    h.update(json.dumps(camera.to_dict(), sort_keys=True).encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:16]


def prepare_footage(source: str, camera: Camera, root: Path, size: tuple[int, int], teacher_path: str | Path, *,
                    max_frames: int = 2000, max_heldout: int = 300, holdout: float = 0.2, gap_s: float = 0.1,
                    teacher_score: float = 0.5, progress: Callable[[int, int], None] | None = None) -> Footage:
    """Read ``source`` once and write the training, triplet and held-out folders under ``root``.

    ``camera`` is the source's calibration at native size; ``size`` the network input (H, W) the
    triplets are stored to cover. An already prepared ``root`` with the same source, camera and
    settings is reused (``footage.json`` is written last); anything else there is replaced."""
    settings = {"size": list(size), "max_frames": max_frames, "max_heldout": max_heldout, "holdout": holdout,
                "gap_s": gap_s, "teacher": str(Path(teacher_path).resolve()), "teacher_score": teacher_score,
                "version": VERSION}
    ident = source_ident(source, camera, settings)
    meta_path = root / "footage.json"
    if meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()).get("ident") == ident:
                log.info("footage already prepared in %s", root)
                return Footage.load(root)
        except (OSError, json.JSONDecodeError, KeyError):
            pass
        log.info("%s holds footage prepared from another source or settings: preparing again", root)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)

    reader = VideoReader(source, camera)
    plan = plan_footage(reader.frame_count, reader.fps, max_frames=max_frames, max_heldout=max_heldout,
                        holdout=holdout, gap_s=gap_s)
    log.info("%s: %d frames at %.1f fps in %d blocks (every %d-th held out); %d training frames (triplets %d "
             "frames apart), %d held-out frames", source, plan.frames, reader.fps, plan.blocks, plan.holdout_every,
             len(plan.train_centres), plan.gap, len(plan.heldout))
    teacher = YoloxTeacher(teacher_path)
    pinhole = camera.pinhole() if camera.has_distortion else camera

    centres, heldout = set(plan.train_centres), set(plan.heldout)
    wanted_last = {c + plan.gap: c for c in plan.train_centres}     # frame that completes a triplet -> its centre
    needed = centres | heldout | {c - plan.gap for c in centres} | set(wanted_last)
    recent: deque[tuple[int, np.ndarray]] = deque(maxlen=2 * plan.gap + 1)   # (index, cover-size frame)
    (root / "triplets" / "frames").mkdir(parents=True)
    (root / "heldout").mkdir()
    n_train = n_trip = n_held = 0
    triplets: list[list[int]] = []
    last_needed = max(needed)
    for sample in _frames(reader, needed, last_needed, progress):
        i, img = sample.extras["frame_index"], sample.images[0]
        cover_img = None
        if i in centres or i in wanted_last or (i + plan.gap) in centres:
            cover_img = resize_to_cover(camera.undistort(img) if camera.has_distortion else img, size)
            recent.append((i, cover_img))
        if i in centres:
            boxes = teacher.pseudo_labels(img, score_thresh=teacher_score, tiles=True)
            depth = contact_depth(boxes, sample.cameras[0])     # where the teacher's vehicles touch the road
            write_sample(Sample([img], [sample.cameras[0]], sample.timestamp, boxes2d=[boxes],
                                depth=None if depth is None else [depth], frame_id=sample.frame_id,
                                extras={"depth_dense": False}),
                         root / "train" / f"{n_train:06d}", with_depth=depth is not None)
            n_train += 1
        if i in wanted_last:
            c = wanted_last[i]
            frames = {j: f for j, f in recent}
            if c - plan.gap in frames and c in frames:
                idx = []
                for j in (c - plan.gap, c, i):
                    write_jpeg(root / "triplets" / "frames" / f"{n_trip * 3 + len(idx):06d}.jpg", frames[j], 95)
                    idx.append(n_trip * 3 + len(idx))
                triplets.append(idx)
                n_trip += 1
        if i in heldout:
            write_jpeg(root / "heldout" / f"{n_held:06d}.jpg", img, 95)
            n_held += 1
    if n_train == 0 or n_trip == 0 or n_held == 0:
        raise ValueError(f"{source}: decoding gave {n_train} training frames, {n_trip} triplets and {n_held} "
                         "held-out frames; need at least one of each")
    cover_h, cover_w = recent[-1][1].shape[:2]
    cam_cover = pinhole.scaled(cover_w, cover_h)     # the camera of the stored triplet frames
    (root / "triplets" / "meta.json").write_text(json.dumps({
        "format": "perception-video-frames", "version": 1, "count": n_trip * 3, "spec": f"adapt:{source}",
        "source": source, "camera": cam_cover.to_dict(), "guessed_camera": False, "triplets": triplets}))
    Rig("camera", [camera]).save(root / "camera.yaml")   # the calibration of the held-out frames
    meta = {"format": FORMAT, "version": VERSION, "ident": ident, "source": source, "camera": camera.to_dict(),
            "train_frames": n_train, "triplets": n_trip, "heldout_frames": n_held, "settings": settings,
            "plan": {**{k: v for k, v in asdict(plan).items() if k not in ("train_centres", "heldout")},
                     "heldout_first_last": [plan.heldout[0], plan.heldout[-1]]}}
    tmp = meta_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(meta_path)
    return Footage.load(root)


def _frames(reader: VideoReader, needed: set[int], last: int, progress: Callable[[int, int], None] | None):
    """The frames of ``reader`` whose index is in ``needed``, in order (stops after ``last``)."""
    total = len(reader)
    for sample in reader:
        i = sample.extras["frame_index"]
        if progress and (i % 25 == 0 or i == last):
            progress(min(i + 1, total), total)
        if i in needed:
            yield sample
        if i >= last:
            break
    if progress:
        progress(total, total)

