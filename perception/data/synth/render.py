"""The renderer: ray casting of the world's analytic ground and primitives for every camera
of a rig, shading, effects, and exact ground truth, returned as a ``Sample``.

``render(world, rig, device)`` is the one-call API; :class:`Renderer` keeps per-rig caches
(pixel rays, tiles, noise) and is what datasets hold on to.

Outputs per camera: RGB uint8, z-depth float32 in metres (0 = sky or farther than
``max_depth``), ``extras["instance"]`` int32 object ids (0 = background),
``extras["semantic"]`` uint8 ids of :data:`SEMANTIC_CLASSES`, 2D boxes; 3D boxes in the ego
frame; ``extras["bev"]`` BEV maps (see :mod:`perception.data.synth.labels`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from perception.data.sample import Sample
from perception.data.synth import effects, materials, raycast
from perception.data.synth.labels import BevGrid, bev_maps, boxes2d, boxes3d_ego
from perception.data.synth.scene import SEMANTIC_CLASSES, Frame, World
from perception.data.synth.shadows import ground_maps
from perception.geometry import Camera, Rig

log = logging.getLogger(__name__)

FAR = 3000.0
GROUND_RANGE = 320.0


@dataclass
class RenderOptions:
    tile: int = 8
    max_depth: float = 300.0          # depth GT beyond this (and sky) is 0 = invalid
    effects: bool = True              # weather/camera effects (fog is always on)
    labels: bool = True               # 2D boxes (amodal masks)
    bev: BevGrid | None = field(default_factory=BevGrid)   # None: no BEV ground truth
    min_pixels: int = 16              # 2D boxes with fewer visible pixels get ignore=True


class _CamGroup:
    """Cached rays/tiles of cameras sharing one image size."""

    def __init__(self, cams: list[Camera], tile: int, device: torch.device) -> None:
        self.cams = cams
        self.H, self.W = cams[0].height, cams[0].width
        self.Hp = -(-self.H // tile) * tile
        self.Wp = -(-self.W // tile) * tile
        self.tile = tile
        C = len(cams)
        vv, uu = np.meshgrid(np.arange(self.Hp, dtype=np.float64), np.arange(self.Wp, dtype=np.float64), indexing="ij")
        uv = np.stack([uu.ravel(), vv.ravel()], -1)
        rays = np.stack([c.pixel_rays(uv) for c in cams])                       # [C, HpWp, 3], z = 1
        ty, tx = self.Hp // tile, self.Wp // tile
        self.ty, self.tx = ty, tx
        # row-major rays (effects) and tile-major rays (rendering: a tile is a contiguous block)
        self.rays_rm = torch.as_tensor(rays, dtype=torch.float32, device=device)
        tm = rays.reshape(C, ty, tile, tx, tile, 3).transpose(0, 1, 3, 2, 4, 5).reshape(C, -1, 3)
        self.rays = torch.as_tensor(np.ascontiguousarray(tm), dtype=torch.float32, device=device)
        r = rays.reshape(C, ty, tile, tx, tile, 3).transpose(0, 1, 3, 2, 4, 5).reshape(C, ty * tx, tile * tile, 3)
        eps = 1e-6
        self.tile_rects = np.stack([r[..., 0].min(-1) - eps, r[..., 1].min(-1) - eps,
                                    r[..., 0].max(-1) + eps, r[..., 1].max(-1) + eps], -1)
        self.grid = None
        if not any(c.has_distortion for c in cams) and all(abs(c.K[0, 1]) < 1e-12 for c in cams):
            # pinhole: tile rectangles form a grid; edges halfway between neighbouring pixel rays
            xs, ys = rays[:, :self.Wp, 0], rays[:, ::self.Wp, 1]                    # [C, Wp], [C, Hp]
            def edges(v: np.ndarray) -> np.ndarray:
                step = v[:, 1:2] - v[:, 0:1]
                b = v[:, ::tile] - step / 2
                return np.concatenate([b, v[:, -1:] + step / 2], 1)
            self.grid = (edges(xs), edges(ys), tx)
        self.T, self.S = ty * tx, tile * tile
        self.fx = torch.as_tensor([c.fx for c in cams], dtype=torch.float32, device=device)
        self.cam_of = torch.arange(C, device=device).repeat_interleave(self.Hp * self.Wp)
        self.ray_len = torch.linalg.norm(self.rays, dim=-1).reshape(-1)
        self.ray_xy = (self.rays[..., 0].reshape(-1, tile * tile).contiguous(),
                       self.rays[..., 1].reshape(-1, tile * tile).contiguous())
        self.vignette = effects.vignette(self.H, self.W, 0.25, device)
        self.ground = self._ground_cache(cams, tm, device)

    @staticmethod
    def _ground_cache(cams: list[Camera], rays_tm: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        """Per pixel (tile-major): exact ground depth ``t`` (inf: no hit within FAR), the hit in
        the ego frame, pixel footprints, Fresnel term and viewing distance (float64 maths)."""
        out: dict[str, list[np.ndarray]] = {k: [] for k in ("t", "xe", "ye", "foot", "foot_long", "fresnel", "dist")}
        for c, r in zip(cams, rays_tm):
            d = r @ c.T_ego_cam[:3, :3].T                                          # ego-frame rays, cam z = 1
            h = c.T_ego_cam[2, 3]
            hit = d[:, 2] < -1e-9
            t = np.where(hit, -h / np.where(hit, d[:, 2], -1.0), np.inf)
            t = np.where(t < FAR, t, np.inf)
            tf = np.where(np.isfinite(t), t, 0.0)
            dl = np.linalg.norm(d, axis=1)
            foot = tf * dl / c.fx
            graz = np.clip(-d[:, 2] / dl, 1e-4, 1)
            out["t"].append(t)
            out["xe"].append(c.T_ego_cam[0, 3] + tf * d[:, 0])
            out["ye"].append(c.T_ego_cam[1, 3] + tf * d[:, 1])
            out["foot"].append(foot)
            out["foot_long"].append(foot / graz)
            out["fresnel"].append(0.04 + 0.96 * (1 - graz) ** 5)
            out["dist"].append(tf * dl)
        return {k: torch.as_tensor(np.concatenate(v), dtype=torch.float32, device=device) for k, v in out.items()}

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        """Tile-major per-pixel values [C*Hp*Wp, ...] -> row-major images [C, H, W, ...]."""
        C, t = len(self.cams), self.tile
        rest = x.shape[1:]
        y = x.reshape(C, self.ty, self.tx, t, t, *rest).transpose(2, 3).reshape(C, self.Hp, self.Wp, *rest)
        return y[:, :self.H, :self.W]

    def pixel_rc(self, pix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tile-major flat pixel ids -> (camera, row, col)."""
        t = self.tile
        cam, q = pix // (self.T * self.S), pix % (self.T * self.S)
        tile, s = q // self.S, q % self.S
        return cam, (tile // self.tx) * t + s // t, (tile % self.tx) * t + s % t


class Renderer:
    """Renders :class:`World` frames for one rig on one device."""

    def __init__(self, rig: Rig, device: str | torch.device = "cpu", options: RenderOptions | None = None) -> None:
        self.rig = rig
        self.device = torch.device(device)
        self.opt = options or RenderOptions()
        groups: dict[tuple[int, int], list[int]] = {}
        for i, c in enumerate(rig.cameras):
            groups.setdefault((c.width, c.height), []).append(i)
        self.groups = [(idx, _CamGroup([rig.cameras[i] for i in idx], self.opt.tile, self.device))
                       for idx in groups.values()]
        self._noise: dict[int, materials.NoiseBank] = {}
        self._sensor: dict[tuple[int, int, int], effects.NoiseField] = {}

    def noise(self, seed: int) -> materials.NoiseBank:
        if seed not in self._noise:
            self._noise.clear()
            self._noise[seed] = materials.NoiseBank(seed, self.device)
        return self._noise[seed]

    # ------------------------------------------------------------------ main entry
    @torch.no_grad()
    def __call__(self, world: World | Frame) -> Sample:
        fr = world.frame() if isinstance(world, World) else world
        dev = self.device
        C = len(self.rig)
        images: list[np.ndarray | None] = [None] * C
        depths: list[np.ndarray | None] = [None] * C
        inst_maps: list[np.ndarray | None] = [None] * C
        sem_maps: list[np.ndarray | None] = [None] * C
        b3d = boxes3d_ego(fr.objects, fr.ego_pose)
        lt = fr.lighting
        gmaps = ground_maps(fr.prims, fr.objects, fr.ego_pose[:2, 3], lt.sun_dir, lt.sun_intensity > 0.05, fr.lamps,
                            lt.night, dev)
        boxes_2d: list = [None] * C
        for idx, grp in self.groups:
            out = self._render_group(fr, grp, gmaps, b3d)
            for k, i in enumerate(idx):
                images[i], depths[i], inst_maps[i], sem_maps[i] = (out["image"][k], out["depth"][k],
                                                                   out["instance"][k], out["semantic"][k])
                boxes_2d[i] = out["boxes2d"][k] if out["boxes2d"] is not None else None
        extras = {"instance": inst_maps, "semantic": sem_maps, "semantic_classes": SEMANTIC_CLASSES,
                  "T_world_ego": fr.ego_pose, "ego_velocity": fr.ego_velocity, "seed": fr.seed,
                  "weather": lt.weather, "time_of_day": lt.time_of_day}
        if self.opt.bev is not None:
            extras["bev"] = bev_maps(self.opt.bev, fr.ego_pose, fr.layout, b3d, fr.prims, dev)
        return Sample(images=images, cameras=list(self.rig.cameras), timestamp=fr.time, depth=depths,
                      boxes2d=boxes_2d if self.opt.labels else None, boxes3d=b3d,
                      frame_id=f"synth-{fr.seed}-{fr.index:06d}", extras=extras)

    # ------------------------------------------------------------------ one camera group
    def _render_group(self, fr: Frame, g: _CamGroup, gmaps, b3d) -> dict:
        dev = self.device
        lt = fr.lighting
        cams = g.cams
        C = len(cams)
        HWp = g.Hp * g.Wp
        T_wc = np.stack([fr.ego_pose @ c.T_ego_cam for c in cams])                   # [C, 4, 4]
        origins = T_wc[:, :3, 3]
        R_wc = T_wc[:, :3, :3]
        R_cw = np.transpose(R_wc, (0, 2, 1))
        dirs = torch.bmm(g.rays, torch.as_tensor(R_wc, dtype=torch.float32, device=dev).transpose(1, 2))
        dirs = dirs.reshape(-1, 3)                                                   # [C*HWp, 3]
        cam_of = g.cam_of
        # ground plane z = 0 (exact): the ego is flat on the ground, so each pixel's ground hit is
        # fixed in the ego frame and cached per rig (see _CamGroup.ground)
        gnd = g.ground
        zbuf = gnd["t"].clone()
        prims = fr.prims
        winner, raw = raycast.cast(prims, origins, R_cw, g.tile_rects, (C, g.T, g.S), g.ray_xy, zbuf, dev, FAR,
                                   label_objects=prims["obj"] if self.opt.labels else None, grid=g.grid)
        t = zbuf
        finite = torch.isfinite(t)
        is_obj = winner >= 0
        is_ground = finite & ~is_obj
        is_sky = ~finite
        N = len(t)
        rad = torch.zeros(N, 3, device=dev)
        sem = torch.zeros(N, dtype=torch.int64, device=dev)
        dlen = g.ray_len                                   # |d| is rotation invariant
        sun = torch.as_tensor(lt.sun_dir, dtype=torch.float32, device=dev)
        sun_col = torch.as_tensor(lt.sun_color, dtype=torch.float32, device=dev) * lt.sun_intensity
        amb = torch.as_tensor(lt.ambient, dtype=torch.float32, device=dev)
        zen = torch.as_tensor(lt.sky_zenith, dtype=torch.float32, device=dev) * 1.6
        hor = torch.as_tensor(lt.sky_horizon, dtype=torch.float32, device=dev) * 1.6
        nb = self.noise(fr.seed)
        org = torch.as_tensor(origins, dtype=torch.float32, device=dev)
        ego = fr.ego_pose
        ego_t = torch.as_tensor(ego, dtype=torch.float32, device=dev)

        def ego_xy(px: torch.Tensor, py: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            rx, ry = px - ego_t[0, 3], py - ego_t[1, 3]
            return rx * ego_t[0, 0] + ry * ego_t[1, 0], rx * ego_t[0, 1] + ry * ego_t[1, 1]

        def headlights(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
            return _headlights(*ego_xy(px, py))

        def take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return x.index_select(0, idx)

        fog_col = torch.as_tensor(lt.fog_color, dtype=torch.float32, device=dev) * (1.0 if not lt.night else 0.5)
        # ---------------- sky
        ks = torch.nonzero(is_sky).squeeze(1)
        if len(ks):
            du = take(dirs, ks) / take(dlen, ks)[:, None]
            col = materials.sky(du, sun, zen, hor, lt.clouds, nb, lt.night, lt.sun_intensity)
            col = effects.fog(col, torch.full((len(ks),), 120.0, device=dev), lt.fog_density, fog_col * 0.9)
            rad.index_copy_(0, ks, col)
        # ---------------- ground
        kg = torch.nonzero(is_ground).squeeze(1)
        if len(kg):
            tg = take(t, kg)
            xe, ye = take(gnd["xe"], kg), take(gnd["ye"], kg)
            cy_, sy_ = float(ego[0, 0]), float(ego[1, 0])
            px = xe * cy_ - ye * sy_ + float(ego[0, 3])
            py = xe * sy_ + ye * cy_ + float(ego[1, 3])
            foot, foot_long = take(gnd["foot"], kg), take(gnd["foot_long"], kg)
            # road pieces within GROUND_RANGE of the ego paint the ground (beyond: terrain, in the fog)
            segs = fr.layout.near_segments(float(ego[0, 3]), float(ego[1, 3]), GROUND_RANGE)
            crs = fr.layout.near_crossings(float(ego[0, 3]), float(ego[1, 3]), GROUND_RANGE)
            alb, sg, gloss = materials.ground(px, py, foot, foot_long, fr.layout, segs, crs, fr.extras_palette,
                                              nb, lt.wet)
            alb = alb * (1 - 0.45 * gloss[:, None])           # wet surfaces are darker
            m = gmaps.sample(px, py)
            light = sun_col * (max(float(lt.sun_dir[2]), 0.0) * m[:, 0:1]) + amb * m[:, 1:2] * 1.1
            if m.shape[1] > 2:
                light = light + m[:, 2:5]
            if lt.night:
                light = light + _headlights(xe, ye)[:, None] * torch.tensor([1.0, 0.95, 0.85], device=dev)
            col = alb * light
            # wet / glossy reflection of the sky
            fres = take(gnd["fresnel"], kg) * gloss
            col = col + fres[:, None] * (hor * 0.5 + zen * 0.1)
            col = effects.fog(col, take(gnd["dist"], kg), lt.fog_density, fog_col)
            rad.index_copy_(0, kg, col)
            sem.index_copy_(0, kg, sg)
        # ---------------- primitives
        ko = torch.nonzero(is_obj).squeeze(1)
        if len(ko):
            P = len(prims["kind"])
            # one packed per-primitive table, gathered once; pixels sorted by material
            table = torch.as_tensor(np.concatenate([
                prims["R"].reshape(P, 9), prims["half"], prims["color"], prims["tag"][:, None],
                prims["kind"][:, None], prims["mat"][:, None], prims["sem"][:, None]], 1), dtype=torch.float32,
                device=dev)
            sort_key = torch.as_tensor(prims["mat"] * 4 + prims["kind"], device=dev)
            pid = take(winner, ko)
            keys = take(sort_key, pid)
            order = torch.argsort(keys, stable=True)
            ko = take(ko, order)
            pid = take(pid, order)
            # the per-primitive table gathered as [19, N]: every attribute is a contiguous row
            tb = table.T.contiguous().index_select(1, pid)
            Rr = [tb[k] for k in range(9)]                         # R[i][j] = Rr[3 * i + j] (world -> local)
            half, color, tag = tb[9:12].T, tb[12:15].T, tb[15]
            kind, mat, semo = tb[16].long(), tb[17].long(), tb[18].long()
            co = take(cam_of, ko)
            to, do, lo_ = take(t, ko), take(dirs, ko), take(dlen, ko)
            cen = torch.as_tensor(prims["center"], dtype=torch.float64, device=dev)
            crel = (cen[None] - torch.as_tensor(origins, dtype=torch.float64, device=dev)[:, None]).float()  # [C,P,3]
            c_rel = take(crel.reshape(-1, 3), co * P + pid)
            hit_rel = to[:, None] * do
            q = [hit_rel[:, k] - c_rel[:, k] for k in range(3)]
            pl = torch.stack([Rr[3 * i] * q[0] + Rr[3 * i + 1] * q[1] + Rr[3 * i + 2] * q[2] for i in range(3)], 1)
            counts = torch.bincount(keys, minlength=4 * 32).tolist()
            runs, a = [], 0
            for key, cnt in enumerate(counts):
                if cnt:
                    runs.append((a, a + cnt, key % 4))
                    a += cnt
            nl = raycast.local_normal(runs, pl, half)
            nc = [nl[:, k] for k in range(3)]
            nw = torch.stack([Rr[i] * nc[0] + Rr[3 + i] * nc[1] + Rr[6 + i] * nc[2] for i in range(3)], 1)
            world = hit_rel + take(org, co)
            # metres one pixel covers at the hit (for texture finer than a pixel to fade, as a lens would)
            footprint = to * lo_ / take(g.fx, co) if fr.leaves > 0 else None
            surf = materials.objects(mat, pl, nl, half, color, tag, world, nb, lt.night, kind,
                                     leaves=fr.leaves, footprint=footprint)
            ndl = raycast.dot3(nw, sun)
            lam = ((ndl + surf.wrap) / (1 + surf.wrap)).clamp_min(0)
            ambient = 0.75 + 0.25 * nw[:, 2]                      # hemisphere: darker facing down
            if lt.night:
                m = gmaps.sample(world[:, 0], world[:, 1])
                ambient = ambient * (1 - (world[:, 2] < 1.0).float() * (1 - m[:, 1]) * 0.5)
                extra = m[:, 2:5] * 0.6 + headlights(world[:, 0], world[:, 1])[:, None] * 0.8
            else:
                # contact shadows only matter close to the ground: sample the map for those hits
                low = torch.nonzero(world[:, 2] < 1.0).squeeze(1)
                if len(low):
                    ml = gmaps.sample(take(world[:, 0], low), take(world[:, 1], low))
                    ambient = ambient.index_copy(0, low, take(ambient, low) * (1 - (1 - ml[:, 1]) * 0.5))
                extra = None
            light = torch.addcmul(sun_col * lam[:, None], amb, ambient[:, None])
            if extra is not None:
                light = light + extra
            col = torch.addcmul(surf.emissive, surf.albedo, light)
            # specular (sun highlight + Fresnel sky reflection) only where the material is glossy
            ks_ = torch.nonzero(surf.spec > 0).squeeze(1)
            if len(ks_):
                nws, sp = take(nw, ks_), take(surf.spec, ks_)
                v = -take(do, ks_) / take(lo_, ks_)[:, None]
                nv = raycast.dot3(nws, v).clamp(0, 1)
                refl_z = (2 * nv * nws[:, 2] - v[:, 2]).clamp(0, 1)[:, None]
                add = (sp * (0.06 + 0.94 * (1 - nv) ** 5))[:, None] * (hor * (1 - refl_z) + zen * refl_z) * \
                    (0.25 if lt.night else 1.0)
                if lt.sun_intensity > 0.05:
                    h = sun + v
                    h = h / raycast.dot3(h, h).sqrt().clamp_min(1e-6)[:, None]
                    nh = raycast.dot3(nws, h).clamp_min(0)
                    add = add + (sp * (nh ** 60) * 2.0 * (take(ndl, ks_) > 0))[:, None] * sun_col
                col = col.index_add(0, ks_, add)
            col = effects.fog(col, to * lo_, lt.fog_density, fog_col)
            rad.index_copy_(0, ko, col)
            sem.index_copy_(0, ko, semo)
        # ---------------- images
        H, W = g.H, g.W
        tt = g.to_image(t)
        rngs = [np.random.default_rng(np.random.SeedSequence([fr.seed, fr.index, ci, 0xEFF])) for ci in range(C)]
        images = self._camera_effects(g.to_image(rad), tt, fr, g, rngs)
        depth = torch.where(torch.isfinite(tt) & (tt <= self.opt.max_depth), tt, torch.zeros_like(tt))
        objid = torch.as_tensor(prims["obj"], device=dev)
        inst = torch.where(winner >= 0, objid[winner.clamp_min(0)], torch.zeros_like(winner))
        inst = g.to_image(inst).to(torch.int32)
        semc = g.to_image(sem).to(torch.uint8)
        b2d = None
        if self.opt.labels:
            if raw is not None:
                raw["cam"], raw["row"], raw["col"] = g.pixel_rc(raw.pop("pix"))
            b2d = boxes2d(cams, b3d, inst, raw, H, W, self.opt.min_pixels)
        return {"image": images, "depth": list(depth.cpu().numpy().astype(np.float32)),
                "instance": list(inst.cpu().numpy()), "semantic": list(semc.cpu().numpy()), "boxes2d": b2d}

    def _camera_effects(self, rad: torch.Tensor, t: torch.Tensor, fr: Frame, g: _CamGroup,
                        rngs: list[np.random.Generator]) -> list[np.ndarray]:
        """Linear radiance [C, H, W, 3] -> uint8 RGB images (numpy HxWx3 per camera).

        Exposure, white balance, vignetting and the tone curve run in torch (one lookup table);
        lens softness, motion blur, rain and sensor noise run per image in OpenCV/numpy, which
        is several times cheaper than torch for these small-kernel filters on CPU.
        """
        dev = self.device
        lt = fr.lighting
        C, H, W, _ = rad.shape
        fx_flow = None
        if self.opt.effects:
            wb = np.stack([r.normal(1.0, 0.03, 3) for r in rngs])
            expo = lt.exposure * np.array([r.uniform(0.85, 1.15) for r in rngs])
            gain = torch.as_tensor(wb * expo[:, None], dtype=torch.float32, device=dev)[:, None, None, :]
            gain = gain * g.vignette[0, 0, :, :, None]
            # depth-aware motion blur from the ego's motion (static-world flow, pixels per exposure)
            v_ego = np.array([np.hypot(*fr.ego_velocity), 0, 0])
            t_exp = exposure_time(fr)
            vc = np.stack([cam.T_cam_ego[:3, :3] @ (-v_ego) for cam in g.cams])            # [C, 3]
            vct = torch.as_tensor(vc * t_exp, dtype=torch.float32, device=dev)[:, :, None, None]
            ray = g.rays_rm.view(C, g.Hp, g.Wp, 3)[:, :H, :W]
            inv_z = torch.where(torch.isfinite(t), 1.0 / t.clamp_min(0.5), torch.zeros_like(t))
            fx_flow = (g.fx[:, None, None] * (vct[:, 0] - ray[..., 0] * vct[:, 2]) * inv_z).abs()
        else:
            gain = torch.full((C, 1, 1, 3), lt.exposure, dtype=torch.float32, device=dev)
        img = effects.tone_map_u8(rad, gain).cpu().numpy()
        out = []
        k = max(3, (W // 64) | 1)
        if fx_flow is not None:
            flows = fx_flow.cpu().numpy()
        for ci in range(C):
            im = np.ascontiguousarray(img[ci])
            if self.opt.effects:
                im = cv2.GaussianBlur(im, (3, 3), 0.6)
                if flows[ci].mean() > 0.15 * k:
                    a = np.clip(flows[ci] / k, 0, 1).astype(np.float32)
                    im = cv2.blendLinear(cv2.blur(im, (k, 1)), im, a, 1 - a)
                if lt.rain > 0:
                    im = cv2.add(im, effects.rain_layer(H, W, rngs[ci], lt.rain))
                key = (fr.seed, H, W)
                if key not in self._sensor:
                    self._sensor.clear()
                    self._sensor[key] = effects.NoiseField(fr.seed, H, W)
                sigma = 2.5 if not lt.night else 6.0
                im = effects.add_noise(im, self._sensor[key].sample(rngs[ci]), sigma)
            out.append(im)
        return out


def exposure_time(fr: Frame) -> float:
    """Shutter time (s) of a frame's cameras, which sets the motion blur: long at night and dusk;
    in daylight 1/150 s, or with probability ``fr.fast_shutter`` 1/1000 s, as real cameras in sun
    expose, so that near things are not smeared. The draw has its own random stream, so
    ``fast_shutter=0`` leaves every image unchanged."""
    lt = fr.lighting
    if lt.night:
        return 1 / 30
    if lt.time_of_day == "dusk":
        return 1 / 60
    if fr.fast_shutter > 0:
        draw = np.random.default_rng(np.random.SeedSequence([fr.seed, fr.index, 0x5407])).random()
        if draw < fr.fast_shutter:
            return 1 / 1000
    return 1 / 150


def _headlights(xe: torch.Tensor, ye: torch.Tensor) -> torch.Tensor:
    """Ego headlight intensity at ego-frame ground positions (a forward cone)."""
    xe = xe - 3.5
    cone = ((0.35 * xe + 1.0 - ye.abs()) / (0.1 * xe.clamp_min(0) + 0.5)).clamp(0, 1) * (xe > 0)
    return cone * 2.5 / (1 + (xe / 18.0) ** 2)


_CACHE: dict[tuple, Renderer] = {}


def render(world: World | Frame, rig: Rig, device: str | torch.device = "cpu",
           options: RenderOptions | None = None) -> Sample:
    """Render the current frame of ``world`` for every camera of ``rig`` (cached renderer)."""
    key = (id(rig), str(device), id(options), tuple((c.name, c.width, c.height, c.K.tobytes(), c.dist.tobytes(),
                                                     c.T_ego_cam.tobytes()) for c in rig.cameras))
    r = _CACHE.get(key)
    if r is None:
        _CACHE.clear()
        r = _CACHE[key] = Renderer(rig, device, options)
    return r(world)
