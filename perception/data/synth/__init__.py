"""Procedural, seeded, multi-camera synthetic driving world with exact ground truth.

Typical use::

    from perception.data.synth import World, WorldConfig, render, make_surround6
    world = World(seed=3)
    rig = make_surround6().scaled(448, 256)
    sample = render(world, rig)          # Sample with images, depth, boxes, extras
    world.step(0.1)

See docs/synthetic.md for the content, ground-truth definitions and speed.
"""

from perception.data.synth.dataset import DatasetWriter, SynthDataset, SynthFolder, resolve_rig
from perception.data.synth.labels import BevGrid
from perception.data.synth.render import Renderer, RenderOptions, render
from perception.data.synth.rigs import make_front_wide, make_surround6
from perception.data.synth.scene import SEMANTIC_CLASSES, World, WorldConfig

__all__ = ["DatasetWriter", "SynthDataset", "SynthFolder", "resolve_rig", "BevGrid", "Renderer", "RenderOptions", "render", "make_front_wide", "make_surround6",
           "SEMANTIC_CLASSES", "World", "WorldConfig"]
