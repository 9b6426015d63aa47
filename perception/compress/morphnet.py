"""MorphNet (Gordon et al., CVPR 2018): FLOP-weighted group sparsity on BN scales, shrink, expand.

* **Groups.** torch-pruning's DepGraph finds every set of coupled channels (a conv's outputs,
  the BNs after it, the convs that read it, and everything tied by residual adds and
  concats). In a RepVGG block one output channel is the sum of the 3x3-BN, 1x1-BN and
  identity-BN outputs, so its group holds all three gammas: the regulariser is the L2 norm of
  that channel's gammas across *all* coupled BNs (group lasso), so a channel goes to zero
  only when every branch agrees.
* **FLOP weighting.** Each group's term is weighted by the FLOPs one of its channels costs
  (as output of its convs plus as input of the convs that read it), normalised to mean 1.
* **Shrink.** Channels with the smallest group norm (divided by the square root of the group's
  BN count, so groups coupled through many residual adds are not favoured) are removed with DepGraph (a real,
  smaller dense network; RepVGG blocks' ``cin``/``cout`` are re-synchronised so the result
  still reparameterizes), the threshold chosen by bisection to reach ``shrink_flops`` of the
  original FLOPs.
* **Expand.** All shrunk widths are multiplied by one factor (bisection) so the network
  returns to the original FLOP budget; it is built by pruning a 2x-wide copy of the
  architecture group by group, then trained from scratch.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch_pruning as tp
from safetensors.torch import load_file, save_file
from torch import nn

from perception.compress.common import FitConfig, Hooks, ProxyData, describe, evaluate, fit, fused, model_flops, \
    write_report
from perception.nn.blocks import MobileOneBlock, QARepVGGBlock, RepVGGBlock
from perception.nn.checkpoint import model_from_config
from perception.nn.model import ModelConfig, PerceptionNet

log = logging.getLogger(__name__)


@dataclass
class MorphNetConfig:
    strength: float = 1e-3  # lambda of the FLOP-weighted group-L1 term
    shrink_flops: float = 0.5  # shrink to this fraction of the original FLOPs
    min_channels: int = 2  # every group keeps at least this many channels
    min_keep_fraction: float = 0.1  # ... and at least this fraction of its channels
    expand_base: float = 2.0  # width multiplier of the copy the expanded model is cut from
    search_iters: int = 8  # bisection steps of the shrink threshold and of the expand factor
    # start the regularised training from the trained dense model instead of from scratch (what
    # one does at real scale, where each training from scratch costs hours)
    from_dense: bool = False
    # the expanded network is trained from scratch (a full training): skip it with False
    expand: bool = True


def _output_ignored(model: PerceptionNet) -> list[nn.Module]:
    return [model.depth_head.pred] + [m for lvl in model.det_head.levels for m in (lvl.cls_pred, lvl.reg_pred)]


class _Traceable(nn.Module):
    """The model's conv graph without the final flatten/concat over levels (DepGraph reads a
    concat along the anchor axis as a channel concat and would couple unrelated layers)."""

    def __init__(self, model: PerceptionNet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        m = self.model
        d2, pyramid = m.neck(m.backbone(x))
        return [lvl(f) for lvl, f in zip(m.det_head.levels, pyramid)] + [m.depth_head(d2)]


def build_groups(model: PerceptionNet, size: tuple[int, int]) -> tuple[tp.DependencyGraph, list[Any]]:
    model.eval()
    ex = torch.rand(1, 3, *size)
    ign = _output_ignored(model)
    # (passing ignored_layers to build_dependency makes torch-pruning 1.6 couple unrelated head
    # layers through the ignored convs; instead skip every group that would cut an output conv)
    dg = tp.DependencyGraph().build_dependency(_Traceable(model), example_inputs=ex,
                                               output_transform=lambda o: sum(t.sum() for t in o))
    ign_set = set(ign)
    groups = [g for g in dg.get_all_groups(ignored_layers=ign, root_module_types=[nn.Conv2d])
              if not any(d.target.module in ign_set and "out_channels" in d.handler.__name__ for d, _ in g)]
    return dg, groups


def _bn_members(group: Any) -> list[tuple[nn.BatchNorm2d, list[int]]]:
    out = []
    for dep, idxs in group:
        if isinstance(dep.target.module, nn.BatchNorm2d):
            out.append((dep.target.module, [int(i) for i in idxs]))
    return out


def _conv_output_sizes(model: nn.Module, size: tuple[int, int]) -> dict[nn.Conv2d, int]:
    hw: dict[nn.Conv2d, int] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o: hw.__setitem__(mod, o.shape[-2] * o.shape[-1]))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.rand(1, 3, *size))
    for h in hooks:
        h.remove()
    return hw


class GroupLasso:
    """The FLOP-weighted group-L1 regulariser over coupled BN gammas (call it on the model)."""

    def __init__(self, model: PerceptionNet, size: tuple[int, int], strength: float):
        _, groups = build_groups(model, size)
        hw = _conv_output_sizes(model, size)
        names = {m: n for n, m in model.named_modules()}
        self.strength = strength
        self.terms: list[tuple[list[tuple[str, torch.Tensor]], float]] = []
        costs = []
        for g in groups:
            bns = _bn_members(g)
            if not bns:
                continue
            cost = 0.0
            for dep, _ in g:
                m = dep.target.module
                if isinstance(m, nn.Conv2d) and m in hw:
                    k = m.kernel_size[0] * m.kernel_size[1]
                    if "out_channels" in dep.handler.__name__:
                        cost += 2 * k * m.in_channels / m.groups * hw[m]
                    else:
                        cost += 2 * k * m.out_channels / m.groups * hw[m]
            self.terms.append(([(names[bn], torch.tensor(idx)) for bn, idx in bns], cost))
            costs.append(cost)
        mean = sum(costs) / max(1, len(costs))
        self.terms = [(members, c / mean if mean else 1.0) for members, c in self.terms]

    def norms(self, model: nn.Module) -> list[torch.Tensor]:
        mods = dict(model.named_modules())
        out = []
        for members, _ in self.terms:
            sq = sum(mods[n].weight[idx].pow(2) for n, idx in members)
            out.append(sq.clamp(min=1e-12).sqrt())
        return out

    def scores(self, model: nn.Module) -> list[torch.Tensor]:
        """Per-channel scores that are comparable across groups: the group norm divided by the
        square root of the group's BN count (an RMS gamma). A group coupled through residual adds
        holds many BNs and so a larger norm; ranking raw norms across groups would empty every
        group with few BNs first, whatever its channels' importance."""
        return [n.detach() / len(members) ** 0.5 for n, (members, _) in zip(self.norms(model), self.terms)]

    def __call__(self, model: nn.Module, outputs: Any = None, batch: Any = None) -> torch.Tensor:
        norms = self.norms(model)
        return self.strength * sum(w * n.sum() for n, (_, w) in zip(norms, self.terms))


def sync_block_attrs(model: nn.Module) -> None:
    """After channel pruning, make RepVGG/QARepVGG/MobileOne blocks' ``cin``/``cout`` match their convs."""
    for m in model.modules():
        if isinstance(m, (RepVGGBlock, QARepVGGBlock)):
            ref = m.rbr_dense.conv if hasattr(m, "rbr_dense") else None
        elif isinstance(m, MobileOneBlock):
            ref = m.rbr_conv[0].conv if hasattr(m, "rbr_conv") else None
        else:
            continue
        if ref is not None:
            m.cin, m.cout, m.groups = ref.in_channels, ref.out_channels, ref.groups


def prune_to_counts(model: PerceptionNet, size: tuple[int, int], keep: list[int] | Callable[[int, Any], list[int]]
                    ) -> list[int]:
    """Prune every DepGraph group of ``model`` in place. ``keep`` is either the channel count per
    group or a function ``(group_index, group) -> channel indices to keep``. Returns the counts kept."""
    dg, groups = build_groups(model, size)
    kept = []
    for j, g in enumerate(groups):
        dep0, idxs0 = g[0]
        n = len(idxs0)
        keep_idx = keep(j, g) if callable(keep) else list(range(min(n, keep[j])))
        drop = sorted(set(range(n)) - set(keep_idx))
        kept.append(n - len(drop))
        if drop:
            pg = dg.get_pruning_group(dep0.target.module, dep0.handler, [int(idxs0[i]) for i in drop])
            pg.prune()
    sync_block_attrs(model)
    return kept


def shrink(model: PerceptionNet, lasso: GroupLasso, size: tuple[int, int], cfg: MorphNetConfig
           ) -> tuple[PerceptionNet, list[int]]:
    """Remove the lowest-norm channels until FLOPs <= ``shrink_flops`` x original (bisection)."""
    base_flops = model_flops(model, size)
    norms = lasso.scores(model)
    flat = torch.cat(norms)
    lo, hi = 0.0, float(flat.max()) + 1e-6
    best: tuple[PerceptionNet, list[int]] | None = None

    def attempt(tau: float) -> tuple[PerceptionNet, list[int], float]:
        m = copy.deepcopy(model)
        lookup = {id_: i for i, id_ in enumerate(range(len(norms)))}

        def keep(j: int, g: Any) -> list[int]:
            if j >= len(norms) or not _bn_members(g):
                return list(range(len(g[0][1])))
            nj = norms[lookup[j]]
            order = torch.argsort(nj, descending=True).tolist()
            alive = [i for i in order if nj[i] >= tau]
            floor = max(cfg.min_channels, math.ceil(cfg.min_keep_fraction * len(order)))
            return sorted(alive if len(alive) >= floor else order[:floor])
        kept = prune_to_counts(m, size, keep)
        return m, kept, model_flops(m, size) / base_flops

    # the lasso's groups are the BN-carrying DepGraph groups, in DepGraph order; map indices
    _, groups = build_groups(model, size)
    bn_group_ids = [j for j, g in enumerate(groups) if _bn_members(g)]
    norms_by_group = {j: norms[i] for i, j in enumerate(bn_group_ids)}
    norms = [norms_by_group.get(j, torch.full((len(g[0][1]),), float("inf"))) for j, g in enumerate(groups)]
    for _ in range(cfg.search_iters):
        mid = 0.5 * (lo + hi)
        m, kept, ratio = attempt(mid)
        if ratio <= cfg.shrink_flops:
            best, hi = (m, kept), mid
        else:
            lo = mid
    if best is None:
        best = attempt(hi)[:2]
    return best


def widen(cfg: ModelConfig, factor: float) -> ModelConfig:
    r = lambda c: max(1, int(round(c * factor)))  # noqa: E731
    bb = dataclasses.replace(cfg.backbone, widths=tuple(r(c) for c in cfg.backbone.widths))
    nk = dataclasses.replace(cfg.neck, widths=tuple(r(c) for c in cfg.neck.widths))
    return dataclasses.replace(cfg, backbone=bb, neck=nk, head_width=r(cfg.head_width),
                               depth_width=r(cfg.depth_width))


def expand(cfg: ModelConfig, shrunk_counts: list[int], budget_flops: float, size: tuple[int, int],
           mcfg: MorphNetConfig, seed: int = 0) -> tuple[PerceptionNet, float]:
    """A freshly initialised network with every shrunk width x ``s``, ``s`` chosen so FLOPs <= budget."""
    lo, hi = 1.0, mcfg.expand_base
    best = None
    for _ in range(mcfg.search_iters):
        s = 0.5 * (lo + hi)
        torch.manual_seed(seed)
        wide = PerceptionNet(widen(cfg, mcfg.expand_base))
        prune_to_counts(wide, size, [max(1, int(round(s * c))) for c in shrunk_counts])
        if model_flops(wide, size) <= budget_flops:
            best, lo = (wide, s), s
        else:
            hi = s
    if best is None:
        torch.manual_seed(seed)
        wide = PerceptionNet(widen(cfg, mcfg.expand_base))
        prune_to_counts(wide, size, shrunk_counts)
        best = (wide, 1.0)
    return best


# ------------------------------------------------------------------------------------------ files
def save_pruned(model: PerceptionNet, path: str | Path) -> Path:
    """safetensors + the per-module channel counts (the config's widths no longer describe it)."""
    shapes = {}
    for n, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            shapes[n] = ["conv", m.in_channels, m.out_channels, m.groups]
        elif isinstance(m, nn.BatchNorm2d):
            shapes[n] = ["bn", m.num_features]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "perception-pruned", "config": json.dumps(model.cfg.to_dict()),
                                         "form": "fused" if model.is_reparameterized else "train",
                                         "shapes": json.dumps(shapes)})
    return path


def load_pruned(path: str | Path) -> PerceptionNet:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    model = model_from_config(meta["config"], meta["form"])
    shapes = json.loads(meta["shapes"])
    for n, m in model.named_modules():
        s = shapes.get(n)
        if s and s[0] == "conv":
            m.in_channels, m.out_channels, m.groups = s[1], s[2], s[3]
            k = m.kernel_size
            m.weight = nn.Parameter(torch.empty(s[2], s[1] // s[3], *k))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(s[2]))
        elif s and s[0] == "bn":
            m.num_features = s[1]
            for attr in ("weight", "bias"):
                setattr(m, attr, nn.Parameter(torch.empty(s[1])))
            m.running_mean, m.running_var = torch.empty(s[1]), torch.empty(s[1])
    sync_block_attrs(model)
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def run_morphnet(make_model: Callable[[int], PerceptionNet], data: ProxyData, fit_cfg: FitConfig,
                 cfg: MorphNetConfig, out: Path, dense: PerceptionNet | None = None) -> dict[str, Any]:
    size = data.size
    if dense is None:
        dense = fit(make_model(fit_cfg.seed), data, fit_cfg)
    dense_row = {**evaluate(dense, data), **describe(fused(dense), size)}
    budget = dense_row["flops"]
    # 1. train with the FLOP-weighted group lasso
    model = copy.deepcopy(dense) if cfg.from_dense else make_model(fit_cfg.seed)
    if model.is_reparameterized:
        raise ValueError("MorphNet needs a train-form model (the branches' BN scales are what it regularises)")
    lasso = GroupLasso(model, size, cfg.strength)
    fit(model, data, fit_cfg, Hooks(extra_loss=lasso))
    regularised = evaluate(model, data)
    # 2. shrink (real channel removal) and fine-tune
    small, counts = shrink(model, lasso, size, cfg)
    shrunk_pruned = evaluate(small, data)
    fit(small, data, fit_cfg)
    shrunk_row = {**evaluate(small, data), **describe(fused(small), size), "before_finetune": shrunk_pruned}
    shrunk_path = save_pruned(small, out / "shrunk.safetensors")
    report = {"config": asdict(cfg), "fit": asdict(fit_cfg), "data": data.description, "dense": dense_row,
              "regularised_before_shrink": regularised, "shrunk": shrunk_row, "group_channels_shrunk": counts}
    if not cfg.expand:
        report.update(expanded=None, file=str(shrunk_path), file_bytes=shrunk_path.stat().st_size,
                      note="expansion skipped (--no-expand): it is a training from scratch")
        write_report(out, "morphnet", report)
        return report
    # 3. expand uniformly to the FLOP budget and retrain from scratch
    big, factor = expand(model.cfg, counts, budget, size, cfg, fit_cfg.seed)
    fit(big, data, fit_cfg)
    big_fused = fused(big)
    expanded_row = {**evaluate(big, data), **describe(big_fused, size), "width_factor": factor}
    path = save_pruned(big, out / "model.safetensors")
    check = load_pruned(path)
    with torch.no_grad():
        x = data.val["images"][:1]
        reload_diff = float((check(x)["det"] - big(x)["det"]).abs().max())
    report.update(expanded=expanded_row, reload_max_abs_diff=reload_diff, file=str(path),
                  file_bytes=path.stat().st_size)
    write_report(out, "morphnet", report)
    return report
