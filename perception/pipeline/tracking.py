"""Multi-object tracking in the ego frame: constant-velocity Kalman filter per track,
Hungarian assignment (``scipy.optimize.linear_sum_assignment``) on centre distance with a gate.

A track is *confirmed* after ``min_hits`` updates and removed after ``max_misses`` frames
without a match. Ids are never reused. Velocities are the filter's ``(vx, vy)`` in m/s
(relative to the ego car: there is no ego-motion input).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from perception.pipeline.bev import FusedObject, _family

__all__ = ["Track", "Tracker"]


@dataclass
class Track:
    id: int
    label: str
    x: np.ndarray                  # [x, y, vx, vy]
    P: np.ndarray                  # 4x4 covariance
    z: float
    size: np.ndarray
    yaw: float
    score: float
    cameras: list[str] = field(default_factory=list)
    hits: int = 1
    misses: int = 0
    age: int = 1

    @property
    def center(self) -> np.ndarray:
        return np.array([self.x[0], self.x[1], self.z])

    @property
    def velocity(self) -> np.ndarray:
        return self.x[2:4].copy()


class Tracker:
    def __init__(self, *, gate: float = 4.0, max_misses: int = 5, min_hits: int = 2, process_noise: float = 2.0,
                 measurement_noise: float = 0.5, smooth: float = 0.5) -> None:
        self.gate, self.max_misses, self.min_hits = gate, max_misses, min_hits
        self.q, self.r, self.smooth = process_noise, measurement_noise, smooth
        self.tracks: list[Track] = []
        self._next_id = 1
        self._last_t: float | None = None

    def _predict(self, dt: float) -> None:
        F = np.eye(4)
        F[0, 2] = F[1, 3] = dt
        q = self.q
        G = np.array([[0.5 * dt * dt, 0], [0, 0.5 * dt * dt], [dt, 0], [0, dt]])
        Q = G @ G.T * q * q
        for t in self.tracks:
            t.x = F @ t.x
            t.P = F @ t.P @ F.T + Q

    def _update(self, t: Track, obj: FusedObject) -> None:
        H = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
        R = np.eye(2) * self.r ** 2
        y = obj.center[:2] - H @ t.x
        S = H @ t.P @ H.T + R
        K = t.P @ H.T @ np.linalg.inv(S)
        t.x = t.x + K @ y
        t.P = (np.eye(4) - K @ H) @ t.P
        a = self.smooth
        t.z = a * t.z + (1 - a) * float(obj.center[2])
        t.size = a * t.size + (1 - a) * obj.size
        dyaw = np.arctan2(np.sin(obj.yaw - t.yaw), np.cos(obj.yaw - t.yaw))
        t.yaw = float(t.yaw + (1 - a) * dyaw)
        t.label = obj.label if obj.score >= t.score * 0.8 else t.label
        t.score = a * t.score + (1 - a) * obj.score
        t.cameras = list(obj.cameras)
        t.hits += 1
        t.misses = 0
        obj.track_id = t.id

    def update(self, objects: list[FusedObject], timestamp: float) -> list[Track]:
        """Advance to ``timestamp`` and fold in this frame's objects; returns confirmed tracks."""
        dt = 0.1 if self._last_t is None else float(np.clip(timestamp - self._last_t, 1e-3, 1.0))
        self._last_t = timestamp
        self._predict(dt)
        for t in self.tracks:
            t.age += 1
        matched_t, matched_o = set(), set()
        if self.tracks and objects:
            cost = np.full((len(self.tracks), len(objects)), 1e6)
            for i, t in enumerate(self.tracks):
                for j, o in enumerate(objects):
                    if _family(t.label) == _family(o.label):
                        cost[i, j] = float(np.hypot(*(t.x[:2] - o.center[:2])))
            rows, cols = linear_sum_assignment(cost)
            for i, j in zip(rows, cols):
                if cost[i, j] <= self.gate:
                    self._update(self.tracks[i], objects[j])
                    matched_t.add(i)
                    matched_o.add(j)
        for i, t in enumerate(self.tracks):
            if i not in matched_t:
                t.misses += 1
        self.tracks = [t for t in self.tracks if t.misses <= self.max_misses]
        for j, o in enumerate(objects):
            if j in matched_o:
                continue
            P = np.diag([self.r ** 2, self.r ** 2, 25.0, 25.0])
            self.tracks.append(Track(self._next_id, o.label, np.array([o.center[0], o.center[1], 0.0, 0.0]), P,
                                     float(o.center[2]), o.size.copy(), o.yaw, o.score, list(o.cameras)))
            o.track_id = self._next_id
            self._next_id += 1
        return self.confirmed()

    def confirmed(self) -> list[Track]:
        return [t for t in self.tracks if t.hits >= self.min_hits and t.misses == 0]
