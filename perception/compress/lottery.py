"""Lottery tickets: iterative magnitude pruning with rewinding (Frankle & Carbin 2019;
Frankle et al. 2020 "Linear mode connectivity and the lottery ticket hypothesis").

Procedure (global pruning over every conv weight of the *train form*):

1. train the dense network for ``rewind_step`` steps and keep those weights ``theta_k``
   (``rewind_step=0`` keeps the initialisation: the original lottery ticket). The initialisation
   is random, or given weights (``init``, e.g. a pretrained model: tickets then rewind to those
   weights, as for pretrained networks in Chen et al. 2020);
2. finish training -> dense accuracy;
3. each round: remove ``rate`` (20%) of the *remaining* weights with the smallest magnitude
   over the whole network, rewind the survivors to ``theta_k`` and retrain with the mask
   re-applied after every optimizer step (so momentum/weight decay cannot revive a pruned
   weight); evaluate;
4. control: the same masks on a fresh random initialisation, trained identically.

The report lists accuracy against density and the lowest density at which the ticket still
matches the dense model (``proxy_map50 >= dense - tolerance``).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from perception.compress.common import FitConfig, Hooks, ProxyData, describe, evaluate, fit, fused, write_report
from perception.nn.checkpoint import save_checkpoint
from perception.nn.model import PerceptionNet
from perception.utils.safe_load import load_state

log = logging.getLogger(__name__)

Masks = dict[str, torch.Tensor]


@dataclass
class LotteryConfig:
    rate: float = 0.2  # fraction of the remaining weights removed per round
    min_density: float = 0.05
    rounds: int | None = None  # default: enough rounds to reach min_density
    rewind_step: int = 0  # k: rewind to the weights after k training steps (0 = initialisation)
    tolerance: float = 0.02  # "matches the dense model": map50 within this (absolute)
    random_control: bool = True

    def n_rounds(self) -> int:
        if self.rounds is not None:
            return self.rounds
        return math.ceil(math.log(self.min_density) / math.log(1 - self.rate))


def prunable(model: nn.Module) -> dict[str, nn.Parameter]:
    """Conv weights (4-D parameters): what magnitude pruning acts on (BN/biases are kept)."""
    return {n: p for n, p in model.named_parameters() if p.ndim == 4}


def density(masks: Masks) -> float:
    return sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())


def global_magnitude_prune(model: nn.Module, masks: Masks, rate: float) -> Masks:
    """New masks without the ``rate`` fraction of surviving weights of smallest |w| (global)."""
    params = prunable(model)
    alive = torch.cat([params[n].detach().abs()[masks[n]].flatten() for n in params])
    k = int(rate * alive.numel())
    if k < 1:
        return masks
    threshold = torch.kthvalue(alive, k).values
    new = {}
    for n, p in params.items():
        keep = masks[n] & (p.detach().abs() > threshold)
        new[n] = keep
    return new


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    for n, p in prunable(model).items():
        p.mul_(masks[n])


def mask_hooks(masks: Masks) -> Hooks:
    return Hooks(after_step=lambda model, step: apply_masks(model, masks))


def full_masks(model: nn.Module) -> Masks:
    return {n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable(model).items()}


STATE_FILE = "lottery-state.pt"


def _save_state(out: Path, state: dict[str, Any]) -> None:
    """Everything needed to continue after the last finished round (written atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(out / STATE_FILE)


def _load_state(out: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    path = out / STATE_FILE
    if not path.is_file():
        return None
    state = load_state(path)  # tensors and plain data only: never runs code from the file
    if state["settings"] != settings:
        raise ValueError(f"{path} was written with other settings ({state['settings']}); use another --out "
                         "or delete it to start over")
    log.info("resuming the lottery run in %s after round %d", out, state["rounds"][-1]["round"])
    return state


def _fingerprint(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def run_lottery(make_model: Callable[[int], PerceptionNet], data: ProxyData, fit_cfg: FitConfig,
                cfg: LotteryConfig, out: Path, resume: bool = False,
                init: PerceptionNet | None = None) -> dict[str, Any]:
    """Full experiment; writes ``out/ticket.safetensors`` (the sparsest matching ticket, train
    form, zeros in place) and ``out/report.json``. ``make_model(seed)`` builds a fresh model.
    ``init`` (train form, same architecture as ``make_model``'s) replaces the random
    initialisation of the dense network and so the weights the tickets rewind to; the
    random-reinitialisation control stays random.

    After the dense training and after every round the state is saved to ``out/lottery-state.pt``
    (and the rounds so far to ``report.json``), so an interrupted run loses at most one round:
    ``resume=True`` continues from it. Every training is seeded, so a resumed run gives the same
    figures as an uninterrupted one."""
    # the number of rounds may grow on resume (continue a finished run to a lower density)
    settings = {"config": {k: v for k, v in asdict(cfg).items() if k not in ("rounds", "min_density")},
                "fit": asdict(fit_cfg), "data": data.description}
    if init is not None:
        if getattr(init, "is_reparameterized", False):
            raise ValueError("lottery init: need a train-form checkpoint (pruning and rewinding act on the "
                             "train form), this one is fused")
        settings["init"] = _fingerprint(init)
    state = _load_state(out, settings) if resume else None
    k = cfg.rewind_step
    rest = FitConfig(**{**asdict(fit_cfg), "steps": max(1, fit_cfg.steps - k)})
    if state is None:
        model = make_model(fit_cfg.seed)
        if init is not None:
            model.load_state_dict(init.state_dict())  # RuntimeError names mismatching tensors
        if k > 0:
            fit(model, data, FitConfig(**{**asdict(fit_cfg), "steps": k}))
            # the schedule continues from step k: approximate by training the remaining steps below
        theta_k = copy.deepcopy(model.state_dict())
        dense = fit(model, data, rest)
        dense_metrics = evaluate(dense, data)
        log.info("dense: %s", dense_metrics)
        masks = full_masks(dense)
        rounds: list[dict[str, Any]] = [{"round": 0, "density": 1.0, "ticket": dense_metrics,
                                         "random_reinit": dense_metrics}]
        best_state, best_density = copy.deepcopy(dense.state_dict()), 1.0
        trained = dense
        _save_state(out, dict(settings=settings, theta_k=theta_k, masks=masks, trained=trained.state_dict(),
                              rounds=rounds, dense=dense_metrics, best_state=best_state, best_density=best_density))
    else:
        theta_k, masks, rounds = state["theta_k"], state["masks"], state["rounds"]
        dense_metrics, best_state, best_density = state["dense"], state["best_state"], state["best_density"]
        trained = make_model(fit_cfg.seed)
        trained.load_state_dict(state["trained"])
    for r in range(len(rounds), cfg.n_rounds() + 1):
        masks = global_magnitude_prune(trained, masks, cfg.rate)
        d = density(masks)
        ticket = make_model(fit_cfg.seed)
        ticket.load_state_dict(theta_k)
        apply_masks(ticket, masks)
        trained = fit(ticket, data, rest, mask_hooks(masks))
        row: dict[str, Any] = {"round": r, "density": d, "ticket": evaluate(trained, data)}
        if cfg.random_control:
            ctrl = make_model(fit_cfg.seed + 1000 + r)  # new random initialisation, same mask
            apply_masks(ctrl, masks)
            fit(ctrl, data, rest, mask_hooks(masks))
            row["random_reinit"] = evaluate(ctrl, data)
        log.info("round %d density %.3f ticket %s control %s", r, d, row["ticket"], row.get("random_reinit"))
        rounds.append(row)
        if row["ticket"]["proxy_map50"] >= dense_metrics["proxy_map50"] - cfg.tolerance:
            best_state, best_density = copy.deepcopy(trained.state_dict()), d
        _save_state(out, dict(settings=settings, theta_k=theta_k, masks=masks, trained=trained.state_dict(),
                              rounds=rounds, dense=dense_metrics, best_state=best_state, best_density=best_density))
        write_report(out, "lottery", {"partial": True, "config": asdict(cfg), "fit": asdict(fit_cfg),
                                      "data": data.description, "dense": dense_metrics, "rounds": rounds})
    ticket = make_model(fit_cfg.seed)
    ticket.load_state_dict(best_state)
    ticket.eval()
    out.mkdir(parents=True, exist_ok=True)
    path = save_checkpoint(ticket, out / "ticket.safetensors", extra={"lottery_density": f"{best_density:.4f}"})
    report = {"config": asdict(cfg), "fit": asdict(fit_cfg), "data": data.description,
              "init": settings.get("init", "random"), "dense": dense_metrics, "rounds": rounds,
              "matching_density": best_density,
              "matching_rule": f"lowest density with proxy_map50 >= dense - {cfg.tolerance}",
              "ticket_train_form": describe(ticket, data.size, latency=False),
              "ticket_fused": describe(fused(ticket), data.size),
              "note": "density counts train-form conv weights; fusing a RepVGG block sums the 3x3, 1x1 and "
                      "identity branches, so the fused kernel is denser (see ticket_fused.nonzero_params). "
                      "Unstructured sparsity saves no dense-kernel latency.",
              "file": str(path), "file_bytes": path.stat().st_size}
    write_report(out, "lottery", report)
    return report
