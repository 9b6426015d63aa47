"""SE(3) helpers on 4x4 homogeneous matrices (numpy, float64).

Convention (DESIGN.md section 2): a transform named ``T_a_b`` maps points from frame b to
frame a: ``p_a = T_a_b @ [p_b, 1]``. ``T_ego_cam`` is therefore camera-to-ego.
"""

from __future__ import annotations

import numpy as np


def make_transform(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Build a 4x4 transform from a 3x3 rotation and a translation."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(R, dtype=np.float64)
    T[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return T


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (uses R^T, exact for rotations)."""
    T = np.asarray(T, dtype=np.float64)
    R, t = T[:3, :3], T[:3, 3]
    return make_transform(R.T, -R.T @ t)


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to ``[..., 3]`` points."""
    points = np.asarray(points, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    return points @ T[:3, :3].T + T[:3, 3]


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


# Rotation that takes OpenCV camera axes (x right, y down, z forward) to ego axes
# (x forward, y left, z up) for a camera looking straight ahead: columns are the camera
# axes expressed in the ego frame.
R_EGO_CAM_FORWARD = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=np.float64)


def camera_pose(x: float, y: float, z: float, yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """``T_ego_cam`` of a camera at (x, y, z) in the ego frame looking along ``yaw``.

    yaw rotates about ego +z (0 = forward, +pi/2 = left); pitch > 0 tilts the camera
    down towards the ground; roll rotates about the optical axis.
    """
    # pitch down = rotation about the camera's +x axis by -pitch in camera coordinates
    R_cam = rot_x(-pitch) @ rot_z(roll)
    R = rot_z(yaw) @ R_EGO_CAM_FORWARD @ R_cam
    return make_transform(R, [x, y, z])


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """3x3 rotation of a unit quaternion ``(w, x, y, z)`` (nuScenes / pyquaternion order)."""
    w, x, y, z = np.asarray(q, dtype=np.float64).reshape(4) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(w, x, y, z)`` with ``w >= 0`` of a 3x3 rotation (orthonormalised first)."""
    R = orthonormalize(R)
    # Shepperd's method via the symmetric 4x4 matrix: robust for all angles
    K = np.array([
        [R[0, 0] - R[1, 1] - R[2, 2], R[1, 0] + R[0, 1], R[2, 0] + R[0, 2], R[2, 1] - R[1, 2]],
        [R[1, 0] + R[0, 1], R[1, 1] - R[0, 0] - R[2, 2], R[2, 1] + R[1, 2], R[0, 2] - R[2, 0]],
        [R[2, 0] + R[0, 2], R[2, 1] + R[1, 2], R[2, 2] - R[0, 0] - R[1, 1], R[1, 0] - R[0, 1]],
        [R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1], R[0, 0] + R[1, 1] + R[2, 2]]]) / 3.0
    vals, vecs = np.linalg.eigh(K)
    x, y, z, w = vecs[:, np.argmax(vals)]
    q = np.array([w, x, y, z])
    return q if w >= 0 else -q


def orthonormalize(R: np.ndarray) -> np.ndarray:
    """Nearest rotation matrix (SVD), for calibration matrices stored with limited precision."""
    U, _, Vt = np.linalg.svd(np.asarray(R, dtype=np.float64))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def yaw_of(R: np.ndarray, heading: np.ndarray = np.array([1.0, 0.0, 0.0])) -> float:
    """Yaw (about +z from +x toward +y) of ``R @ heading`` projected on the x-y plane."""
    d = np.asarray(R, dtype=np.float64) @ heading
    return float(np.arctan2(d[1], d[0]))
