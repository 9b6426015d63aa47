"""Training data specs: a sample-folder path, or ``synth:RIG,key=value,...`` rendered on demand.

``synth:surround6,frames=2000,seed=1000,episode_frames=4,fps=2`` renders 2000 six-camera frames
of the synthetic world (500 short episodes, 0.5 s apart, so frames are diverse) into a cache
folder keyed by the spec and the image size. Rendering is resumable: complete frames already
in the cache are kept, so an interrupted render continues where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable

from perception.data.sample_folder import SampleFolder, write_sample

log = logging.getLogger(__name__)

CACHE_ROOT = Path(os.environ.get("PERCEPTION_CACHE", "runs/cache"))
SYNTH_KEYS = {"frames": int, "seed": int, "episode_frames": int, "fps": float}


def parse_synth_spec(spec: str) -> tuple[str, dict[str, float | int]]:
    """``synth:RIG,k=v,...`` -> (rig, options); raises ValueError naming a bad key."""
    body = spec[len("synth:"):]
    parts = [p for p in body.split(",") if p]
    if not parts:
        raise ValueError(f"data spec {spec!r}: expected synth:RIG[,key=value...]")
    rig, opts = parts[0], {"frames": 1000, "seed": 1000, "episode_frames": 4, "fps": 2.0}
    for p in parts[1:]:
        key, _, value = p.partition("=")
        if key not in SYNTH_KEYS:
            raise ValueError(f"data spec {spec!r}: unknown key {key!r} (known: {sorted(SYNTH_KEYS)})")
        try:
            opts[key] = SYNTH_KEYS[key](value)
        except ValueError:
            raise ValueError(f"data spec {spec!r}: {key}={value!r} is not a {SYNTH_KEYS[key].__name__}") from None
    return rig, opts


def synth_cache_dir(spec: str, size: tuple[int, int], cache_root: Path | None = None) -> Path:
    """Cache folder of a spec. Frame i depends only on (rig, seed, episode_frames, fps, size),
    not on the frame count, so the key leaves ``frames`` out: asking for more frames later
    renders only the new ones."""
    rig, opts = parse_synth_spec(spec)
    ident = f"{rig}|{opts['seed']}|{opts['episode_frames']}|{opts['fps']}|{size[0]}x{size[1]}|v1"
    key = hashlib.sha1(ident.encode()).hexdigest()[:10]
    return (cache_root or CACHE_ROOT) / f"synth-{Path(rig).stem}-{key}"


def render_synth(spec: str, size: tuple[int, int], cache_root: Path | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Path:
    """Render (or finish rendering) the synthetic spec into its cache folder; returns it."""
    from perception.data.synth import SynthDataset

    rig, opts = parse_synth_spec(spec)
    out = synth_cache_dir(spec, size, cache_root)
    out.mkdir(parents=True, exist_ok=True)
    frames = int(opts["frames"])
    done = {p.parent.name for p in out.glob("*/labels.json")}
    todo = [i for i in range(frames) if f"{i:06d}" not in done]
    if todo:
        log.info("rendering %d of %d synthetic frames into %s", len(todo), frames, out)
        ds = SynthDataset(rig, seed=int(opts["seed"]), frames=frames, size=size, fps=float(opts["fps"]),
                          episode_frames=int(opts["episode_frames"]))
        for n, i in enumerate(todo):
            sample = ds[i]
            sample.extras["depth_dense"] = True
            write_sample(sample, out / f"{i:06d}")
            if progress:
                progress(frames - len(todo) + n + 1, frames)
    return out


def resolve_data(specs: list[str], size: tuple[int, int], render: bool = True,
                 progress: Callable[[int, int], None] | None = None) -> list[tuple[str, int | None]]:
    """Turn data specs into (sample-folder path, frame limit) pairs, rendering synthetic specs
    when ``render``. A synthetic cache may hold more frames than a spec asks for (an earlier,
    longer render): the limit keeps training to the first ``frames``."""
    out: list[tuple[str, int | None]] = []
    for spec in specs:
        if spec.startswith("synth:"):
            frames = int(parse_synth_spec(spec)[1]["frames"])
            path = render_synth(spec, size, progress=progress) if render else synth_cache_dir(spec, size)
            out.append((str(path), frames))
        else:
            SampleFolder(spec)  # clear error now if it is missing or empty
            out.append((spec, None))
    return out
