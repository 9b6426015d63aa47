"""The one resize of a camera frame to the network input, with its ``K``.

Every path that feeds the network (``perception run`` / ``live`` / ``demo``, evaluation,
training and adaptation) calls :func:`resize_frame_and_K`, so published metrics measure the
geometry that ``run`` uses.

The policy: scale the frame by one factor on both axes (square pixels stay square, as the
network saw them in training, and ``fx / fy`` keeps its physical meaning) so that it *covers*
the network size, then take the centred window. ``perception run`` picks the network size from
the camera's aspect ratio (:func:`perception.pipeline.runner.auto_size`), so the window loses
at most the rounding to multiples of 32 (about 2 % of a 1280x720 frame's width on each side).
An explicit ``--size`` of another aspect ratio crops more; :func:`plan_resize` reports how much
(``kept_fraction``) so callers can warn. Stretching (the alternative without a crop) changes the
aspect ratio of every object, which the network never saw.

Training adds a random scale and window position on top (``scale``, ``offset``); a window that
reaches past the scaled frame is filled with grey.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from perception.geometry.camera import Camera

__all__ = ["FrameResize", "plan_resize", "resize_frame_and_K", "parse_size", "PAD_VALUE", "MAX_NETWORK_SIDE"]

PAD_VALUE = 124  # grey fill where a (training) window reaches past the scaled frame
MAX_NETWORK_SIDE = 2048  # the shipped models work near 256x448; 8192x8192 would take ~5 GB a frame


def parse_size(text: str) -> tuple[int, int]:
    """A network input size ``"HxW"`` (e.g. ``"224x384"``) -> ``(H, W)``: both sides multiples of
    32 (the network's largest stride) between 32 and ``MAX_NETWORK_SIDE``; ``ValueError`` with the
    reason otherwise."""
    try:
        h, w = (int(v) for v in str(text).lower().replace(" ", "").split("x"))
    except ValueError:
        raise ValueError(f"size must be HxW (height x width, e.g. 224x384), got {text!r}") from None
    if not (32 <= h <= MAX_NETWORK_SIDE and 32 <= w <= MAX_NETWORK_SIDE) or h % 32 or w % 32:
        raise ValueError(f"size {text}: height and width must be multiples of 32 between 32 and "
                         f"{MAX_NETWORK_SIDE}")
    return h, w


@dataclass(frozen=True)
class FrameResize:
    """Frame ``src_w x src_h`` scaled to ``scaled_w x scaled_h``, then the window of size
    ``width x height`` at ``(x0, y0)`` of the scaled frame. Continuous pixel coordinates map
    as ``u' = sx * u - x0`` (box edges); pixel centres as :meth:`Camera.scaled` does."""

    src_w: int
    src_h: int
    scaled_w: int
    scaled_h: int
    x0: int
    y0: int
    width: int
    height: int

    @property
    def sx(self) -> float:
        return self.scaled_w / self.src_w

    @property
    def sy(self) -> float:
        return self.scaled_h / self.src_h

    @property
    def kept_fraction(self) -> float:
        """Share of the source frame's area that lies inside the window."""
        w = min(self.x0 + self.width, self.scaled_w) - max(self.x0, 0)
        h = min(self.y0 + self.height, self.scaled_h) - max(self.y0, 0)
        return max(0, w) * max(0, h) / float(self.scaled_w * self.scaled_h)

    def camera(self, camera: Camera) -> Camera:
        """The network-input camera (``K`` scaled, principal point shifted by the window). A
        ``camera`` calibrated at another size than the source frame is first scaled to it."""
        if camera.size != (self.src_w, self.src_h):
            camera = camera.scaled(self.src_w, self.src_h)
        return camera.scaled(self.scaled_w, self.scaled_h).cropped(self.x0, self.y0, self.width, self.height)

    def affine(self) -> np.ndarray:
        """2x3 map of pixel centres, source -> network input."""
        sx, sy = self.sx, self.sy
        return np.array([[sx, 0, (0.5 * sx - 0.5) - self.x0], [0, sy, (0.5 * sy - 0.5) - self.y0]])

    def to_network(self, boxes: np.ndarray) -> np.ndarray:
        """Source-pixel xyxy box edges -> network-input pixels."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
        b[:, [0, 2]] = b[:, [0, 2]] * self.sx - self.x0
        b[:, [1, 3]] = b[:, [1, 3]] * self.sy - self.y0
        return b

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """Network-input xyxy box edges -> source pixels (inverse of :meth:`to_network`)."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
        b[:, [0, 2]] = (b[:, [0, 2]] + self.x0) / self.sx
        b[:, [1, 3]] = (b[:, [1, 3]] + self.y0) / self.sy
        return b

    def window(self) -> np.ndarray:
        """The network's view in source pixels (xyxy)."""
        return self.to_source(np.array([[0.0, 0.0, self.width, self.height]]))[0]

    def apply(self, image: np.ndarray, interpolation: int | None = None, fill: int = PAD_VALUE) -> np.ndarray:
        """Resize ``image`` (HxW or HxWxC, the source size) and cut the window out of it.
        Default interpolation: area averaging when shrinking, bilinear when enlarging."""
        if interpolation is None:
            interpolation = cv2.INTER_AREA if self.sx < 1 else cv2.INTER_LINEAR
        if (image.shape[1], image.shape[0]) != (self.src_w, self.src_h):
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, the resize plan is for "
                             f"{self.src_w}x{self.src_h}")
        scaled = image if (self.scaled_w, self.scaled_h) == (self.src_w, self.src_h) else \
            cv2.resize(image, (self.scaled_w, self.scaled_h), interpolation=interpolation)
        x0, y0, W, H = self.x0, self.y0, self.width, self.height
        if x0 >= 0 and y0 >= 0 and x0 + W <= self.scaled_w and y0 + H <= self.scaled_h:
            return np.ascontiguousarray(scaled[y0:y0 + H, x0:x0 + W])
        out = np.full((H, W) + image.shape[2:], fill, image.dtype)
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + W, self.scaled_w), min(y0 + H, self.scaled_h)
        if cx1 > cx0 and cy1 > cy0:
            out[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = scaled[cy0:cy1, cx0:cx1]
        return out


def plan_resize(src_w: int, src_h: int, size: tuple[int, int], scale: float = 1.0,
                offset: tuple[int, int] | None = None) -> FrameResize:
    """The resize of a ``src_w x src_h`` frame to network size ``size = (H, W)``: the smallest
    common scale that covers ``W x H`` (times ``scale``, training's jitter), then the centred
    window (or the window at ``offset = (x0, y0)`` of the scaled frame)."""
    H, W = size
    if src_w < 1 or src_h < 1 or H < 1 or W < 1:
        raise ValueError(f"cannot resize a {src_w}x{src_h} frame to {W}x{H}")
    s = max(W / src_w, H / src_h) * scale
    Ws, Hs = max(1, round(src_w * s)), max(1, round(src_h * s))
    x0, y0 = offset if offset is not None else ((Ws - W) // 2, (Hs - H) // 2)
    return FrameResize(src_w, src_h, Ws, Hs, int(x0), int(y0), W, H)


def resize_frame_and_K(image: np.ndarray, camera: Camera, size: tuple[int, int], *, scale: float = 1.0,
                       offset: tuple[int, int] | None = None) -> tuple[np.ndarray, Camera, FrameResize]:
    """``image`` (of ``camera``'s size; ``camera`` is rescaled first if the image size differs)
    resized to the network size ``(H, W)``: ``(network image, network camera, resize plan)``."""
    h0, w0 = image.shape[:2]
    plan = plan_resize(w0, h0, size, scale=scale, offset=offset)
    return plan.apply(image), plan.camera(camera), plan
