"""Compression toolkit: each method runs end to end on a tiny model and must reduce what it
claims to reduce (nonzeros, FLOPs, bits, file size); file formats round-trip exactly."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from perception.cli import app
from perception.compress import binarize, common, deep_compression, distill, lottery, morphnet
from perception.compress.common import TINY_OVERRIDES, FitConfig, average_precision, evaluate, fit, load_data
from perception.nn import create_model, reparameterize_model
from tests.helpers import randomize_bn

FIT = FitConfig(steps=2, batch=4, warmup=1)
common.LATENCY_ITERS = 1  # latency figures are not what these tests check


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models on a shared, loaded 2-core machine: one thread is ~5x faster than two (no
    OpenMP barrier waits on a descheduled sibling thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    return load_data(None, (64, 96), frames=3, val_frames=2)


def tiny(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("rep-n", **TINY_OVERRIDES)


@pytest.fixture(scope="module")
def trained(data):
    return fit(tiny(), data, FIT)


def test_average_precision_and_proxy_metrics(data):
    assert average_precision(np.array([1, 1]), np.array([0.9, 0.8]), 2) == pytest.approx(1.0)
    assert average_precision(np.array([0, 1]), np.array([0.9, 0.8]), 2) == pytest.approx(0.25)
    m = evaluate(tiny(), data)
    assert 0 <= m["proxy_map50"] <= 1 and m["proxy_abs_rel"] > 0


def test_fit_reports_progress_inside_report_progress_only(data):
    seen = []
    with common.report_progress(lambda step, steps, loss: seen.append((step, steps, loss))):
        fit(tiny(), data, FitConfig(steps=3, batch=2, warmup=1))
    fit(tiny(), data, FitConfig(steps=2, batch=2, warmup=1))  # outside the block: no calls
    assert [(s, n) for s, n, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    assert all(np.isfinite(loss) and loss > 0 for *_, loss in seen)


def test_lottery_prunes_20_percent_per_round_and_keeps_masks(data, tmp_path):
    model = tiny()
    masks = lottery.full_masks(model)
    masks = lottery.global_magnitude_prune(model, masks, 0.2)
    assert lottery.density(masks) == pytest.approx(0.8, abs=0.01)
    lottery.apply_masks(model, masks)
    fit(model, data, FIT, lottery.mask_hooks(masks))  # AdamW would revive pruned weights without the hook
    for n, p in lottery.prunable(model).items():
        assert not p[~masks[n]].any()
    rep = lottery.run_lottery(tiny, data, FitConfig(steps=1, batch=4, warmup=1),
                              lottery.LotteryConfig(rounds=1, rewind_step=1), tmp_path)
    dens = [r["density"] for r in rep["rounds"]]
    assert dens[1] == pytest.approx(0.8, abs=0.01)
    assert "random_reinit" in rep["rounds"][1]
    assert rep["ticket_train_form"]["nonzero_params"] <= rep["ticket_train_form"]["params"]
    assert json.loads((tmp_path / "report.json").read_text())["method"] == "lottery"


def test_lottery_resume_continues_to_the_same_figures(data, tmp_path):
    fcfg = FitConfig(steps=2, batch=4, warmup=1)
    straight = lottery.run_lottery(tiny, data, fcfg, lottery.LotteryConfig(rounds=2), tmp_path / "a")
    lottery.run_lottery(tiny, data, fcfg, lottery.LotteryConfig(rounds=1), tmp_path / "b")  # "interrupted"
    partial = json.loads((tmp_path / "b" / "report.json").read_text())
    assert [r["round"] for r in partial["rounds"]] == [0, 1]
    resumed = lottery.run_lottery(tiny, data, fcfg, lottery.LotteryConfig(rounds=2), tmp_path / "b", resume=True)
    assert [r["round"] for r in resumed["rounds"]] == [0, 1, 2]
    assert resumed["rounds"] == straight["rounds"]  # seeded trainings: resuming changes nothing
    with pytest.raises(ValueError, match="other settings"):
        lottery.run_lottery(tiny, data, FitConfig(steps=3, batch=4, warmup=1), lottery.LotteryConfig(rounds=2),
                            tmp_path / "b", resume=True)


def test_huffman_round_trip():
    rng = np.random.default_rng(0)
    sym = rng.geometric(0.3, 500) - 1
    freqs = dict(zip(*np.unique(sym, return_counts=True)))
    codes = deep_compression.canonical_codes(deep_compression.huffman_lengths(freqs))
    blob = deep_compression.huffman_encode(sym, codes)
    assert np.array_equal(deep_compression.huffman_decode(blob, len(sym), codes), sym)
    assert len(blob) < len(sym) * 0.5  # skewed symbols: well under 4 bits each


def test_deep_compression_file_decodes_exactly_and_is_much_smaller(tmp_path):
    model = reparameterize_model(randomize_bn(tiny()))
    masks = deep_compression.prune_layers(model, 0.9, 64)
    sizes = deep_compression.encode_model(model, tmp_path / "m.pdc", 4, masks)
    decoded = deep_compression.load_compressed(tmp_path / "m.pdc")
    for k, v in model.state_dict().items():
        assert torch.equal(decoded.state_dict()[k], v), k
    w = dict(decoded.named_parameters())[next(iter(masks))]
    assert len(torch.unique(w[w != 0])) <= 16  # 4-bit weight sharing
    assert sizes["fp32_bytes"] / sizes["file_bytes"] > 5
    # `--model m.pdc` (perception.nn.resolve_model, behind every command) decodes the same model
    from perception.nn import ModelLoadError, resolve_model

    loaded = resolve_model(str(tmp_path / "m.pdc"))
    assert str(loaded.source).endswith("m.pdc") and loaded.is_reparameterized
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    (tmp_path / "bad.pdc").write_bytes(b"nope")
    with pytest.raises(ModelLoadError, match="not a PDC1"):
        resolve_model(str(tmp_path / "bad.pdc"))


def test_deep_compression_pipeline(data, trained, tmp_path):
    rep = deep_compression.run_deep_compression(trained, data, FIT, deep_compression.DeepCompressionConfig(
        sparsity=0.8, bits=4, min_numel=64, finetune_steps=1, quant_finetune_steps=2), tmp_path)
    assert rep["decoded_vs_quantized_max_abs_diff"] == 0.0  # centroid fine-tuning kept the weights shared
    assert rep["decoded_model"]["nonzero_params"] < 0.5 * rep["dense_fused"]["params"]
    assert rep["file_bytes"] < rep["dense_fused_safetensors_bytes"] / 4


def test_center_tap_codebook_decodes_exactly_and_shares_per_tap_kind(tmp_path):
    model = reparameterize_model(randomize_bn(tiny()))
    masks = deep_compression.prune_layers(model, 0.5, 64)
    books = deep_compression.share_weights(model, masks, 3, center_codebook=True)
    deep_compression.encode_model(model, tmp_path / "c.pdc", 3, masks, books=books)
    decoded = deep_compression.load_compressed(tmp_path / "c.pdc")
    for k, v in model.state_dict().items():
        assert torch.equal(decoded.state_dict()[k], v), k
    name = next(n for n, m in masks.items() if m.shape[-2:] == (3, 3))
    w = dict(decoded.named_parameters())[name].detach()
    centre, other = w[..., 1, 1], w.clone()
    other[..., 1, 1] = 0
    assert len(torch.unique(centre[centre != 0])) <= 8 and len(torch.unique(other[other != 0])) <= 8
    assert len(books[name][0]) == 16  # two codebooks of 2**3 values


def test_global_pruning_hits_the_overall_sparsity_with_uneven_layers():
    model = reparameterize_model(randomize_bn(tiny()))
    masks = deep_compression.prune_layers(model, 0.7, 64, scope="global")
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert kept / total == pytest.approx(0.3, abs=0.01)
    per_layer = [float(m.float().mean()) for m in masks.values()]
    assert max(per_layer) - min(per_layer) > 0.1  # one threshold: layers keep different fractions
    with pytest.raises(ValueError, match="scope"):
        deep_compression.prune_layers(model, 0.7, 64, scope="channel")


def test_centroid_fine_tuning_keeps_weights_shared_and_moves_centroids(data):
    model = reparameterize_model(randomize_bn(tiny()))
    masks = deep_compression.prune_layers(model, 0.5, 64)
    books = deep_compression.share_weights(model, masks, 3)
    name = next(iter(masks))
    before = books[name][0].clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(data.train["images"][:2], data.train["K"][:2])
    (out["det"].pow(2).mean() + out["depth"].mean()).backward()
    opt.step()
    deep_compression.snap_to_shared(model, masks, books)
    w = dict(model.named_parameters())[name].detach()
    assert not torch.equal(before, books[name][0])  # the shared values were trained
    assert len(torch.unique(w[masks[name]])) <= 8 and (w[~masks[name]] == 0).all()


def test_morphnet_shrinks_flops_and_expands_back(data, trained, tmp_path):
    rep = morphnet.run_morphnet(tiny, data, FIT, morphnet.MorphNetConfig(shrink_flops=0.5, search_iters=4), tmp_path,
                                dense=trained)
    dense, small, big = rep["dense"]["flops"], rep["shrunk"]["flops"], rep["expanded"]["flops"]
    assert small <= 0.55 * dense and small < big <= dense
    assert rep["shrunk"]["params"] < rep["dense"]["params"]
    assert rep["reload_max_abs_diff"] < 1e-5
    shrunk = morphnet.load_pruned(tmp_path / "shrunk.safetensors")
    f = reparameterize_model(shrunk)  # still reparameterizes and runs, same outputs
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert (f(x)["det"] - shrunk(x)["det"]).abs().max() < 1e-4


def test_morphnet_from_dense_without_expand(data, trained, tmp_path):
    """The real-scale recipe: regularise the trained model itself, shrink, fine-tune, no expansion."""
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    cfg = morphnet.MorphNetConfig(shrink_flops=0.6, search_iters=4, from_dense=True, expand=False)
    fit_cfg = FitConfig(**{**FIT.__dict__, "steps": 2})
    rep = morphnet.run_morphnet(lambda s: pytest.fail("must not build a fresh model"), data, fit_cfg, cfg, tmp_path,
                                dense=trained)
    assert rep["expanded"] is None and rep["shrunk"]["flops"] <= 0.65 * rep["dense"]["flops"]
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in before.items())  # the dense model is untouched
    # `--model shrunk.safetensors` loads the channel-pruned network
    from perception.nn import resolve_model

    loaded = resolve_model(str(tmp_path / "shrunk.safetensors"))
    assert common.model_flops(reparameterize_model(loaded), data.size) == rep["shrunk"]["flops"]


def test_shrink_scores_do_not_favour_groups_with_many_bns():
    """With every BN gamma equal, every channel scores the same whatever its group's size (raw group
    norms grow with the number of coupled BNs and emptied the small groups of rep-s first)."""
    model = tiny()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.fill_(0.7)
    lasso = morphnet.GroupLasso(model, (64, 96), 1.0)
    assert len({len(members) for members, _ in lasso.terms}) > 1  # groups of different sizes exist
    scores = torch.cat(lasso.scores(model))
    assert torch.allclose(scores, torch.full_like(scores, 0.7))
    small, counts = morphnet.shrink(model, lasso, (64, 96), morphnet.MorphNetConfig(shrink_flops=0.5, search_iters=4))
    _, groups = morphnet.build_groups(tiny(), (64, 96))
    assert all(k >= max(2, math.ceil(0.1 * len(g[0][1]))) for k, g in zip(counts, groups))


def test_group_lasso_couples_all_branches_of_a_rep_block():
    model = tiny()
    lasso = morphnet.GroupLasso(model, (64, 96), 1.0)
    members = [set(n for n, _ in m) for m, _ in lasso.terms]
    stage = "backbone.stages.0.0"
    group = next(g for g in members if f"{stage}.rbr_dense.bn" in g)
    assert f"{stage}.rbr_1x1.bn" in group
    loss = lasso(model)
    loss.backward()
    assert model.backbone.stages[0][0].rbr_dense.bn.weight.grad is not None


@pytest.mark.parametrize("mode", ["bwn", "xnor"])
def test_binary_reduces_bits_and_ops(data, trained, tmp_path, mode):
    rep = binarize.run_binary(trained, data, FIT, binarize.BinaryConfig(mode=mode, finetune_steps=1), tmp_path)
    st = rep["storage"]
    assert st["total_bytes"] < 0.5 * st["fp32_equivalent_bytes"]
    assert rep["ops"]["binary_fraction"] > 0.3 and rep["ops"]["theoretical_speedup"] > 1.2
    assert rep["reload_max_abs_diff"] < 1e-4
    model = binarize.load_binary(tmp_path / "model.safetensors")
    conv = next(m for m in model.modules() if isinstance(m, binarize.BinaryConv2d))
    w = conv.binary_weight()
    assert all(len(torch.unique(row.abs())) == 1 for row in w.flatten(1))  # +-alpha per output channel
    # `--model model.safetensors` recognises the binary file and decodes it
    from perception.nn import resolve_model

    loaded = resolve_model(str(tmp_path / "model.safetensors"))
    n_binary = sum(isinstance(m, binarize.BinaryConv2d) for m in model.modules())
    assert n_binary > 0 and sum(isinstance(m, binarize.BinaryConv2d) for m in loaded.modules()) == n_binary
    x = data.val["images"][:1]
    with torch.no_grad():
        assert torch.allclose(loaded(x)["det"], model(x)["det"], atol=1e-5)


def test_sign_ste_gradients():
    x = torch.tensor([-2.0, -0.5, 0.5, 2.0], requires_grad=True)
    binarize.sign_ste(x, clip=True).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_distillation_adds_terms_and_runs(data, tmp_path):
    from perception.train.losses import PerceptionLoss

    teacher = create_model("rep-n", **{**TINY_OVERRIDES, "head_width": 24}).eval()
    student = tiny().train()
    loss = distill.distill_wrapper(teacher)(PerceptionLoss(student.num_classes, student.cfg.f_ref), student)
    batch = {k: v[:2] for k, v in data.train.items()}
    total, parts = loss(student(batch["images"], batch["K"]), *student.anchors(64, 96), batch)
    total.backward()
    assert {"kd_cls", "kd_feat", "kd_depth"} <= set(parts) and parts["kd_feat"] > 0
    rep = distill.run_distill(tiny, teacher, data, FIT, distill.DistillConfig(), tmp_path)
    assert rep["student_distilled"]["params"] == rep["student_without_distillation"]["params"]


def test_trainer_accepts_a_distillation_wrapper(tmp_path):
    from perception.train.config import TrainConfig
    from perception.train.trainer import train
    from tests.helpers import fake_folder

    folder = fake_folder(tmp_path / "data", frames=2)
    teacher = create_model("rep-n", **TINY_OVERRIDES).eval()
    seen = []

    def wrapper(criterion, student):
        loss = distill.DistillationLoss(criterion, teacher, student)
        def call(*args):
            total, parts = loss(*args)
            seen.append(parts)
            return total, parts
        return call

    cfg = TrainConfig(model="rep-n", out=str(tmp_path / "run"), data=[str(folder)], size=(64, 96), batch=2, steps=1,
                      amp="none", workers=0, warmup_steps=1)
    train(cfg, criterion_wrapper=wrapper)
    assert seen and "kd_feat" in seen[0]


def test_train_config_distill_teacher(tmp_path):
    """`distill: {teacher: ...}` in a training config: the run logs the distillation terms."""
    import csv

    from perception.nn import save_checkpoint
    from perception.train.config import TrainConfig
    from perception.train.trainer import train
    from tests.helpers import fake_folder

    folder = fake_folder(tmp_path / "data", frames=2)
    teacher = save_checkpoint(create_model("rep-n", **TINY_OVERRIDES), tmp_path / "teacher.safetensors")
    cfg = TrainConfig.from_dict({"model": "rep-n", "out": str(tmp_path / "run"), "data": [str(folder)],
                                 "size": [64, 96], "batch": 2, "steps": 2, "amp": "none", "workers": 0,
                                 "warmup_steps": 1, "log_every": 1,
                                 "distill": {"teacher": str(teacher), "temperature": 3.0}})
    assert cfg.distill.temperature == 3.0 and cfg.to_dict()["distill"]["teacher"] == str(teacher)
    train(cfg)
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert rows and float(rows[-1]["kd_feat"]) > 0 and float(rows[-1]["kd_cls"]) > 0
    with pytest.raises(ValueError, match="needs a teacher"):
        TrainConfig.from_dict({"distill": {"temperature": 2.0}})
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_dict({"distill": {"teacher": "rep-s", "temp": 2.0}})
    bad = TrainConfig.from_dict({**cfg.to_dict(), "size": [64, 96], "distill": {"teacher": "no-such-model"},
                                 "out": str(tmp_path / "run2")})
    with pytest.raises(ValueError, match="neither a registered model"):
        train(bad)


def test_cli_compress_rejects_bad_input(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["compress", "prune-everything", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "unknown method" in r.output
    r = runner.invoke(app, ["compress", "binary", "--mode", "ternary", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "bwn or xnor" in r.output
    r = runner.invoke(app, ["compress", "morphnet", "--from-init", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "--from-init needs --init" in r.output


def test_cli_compress_binary_smoke(tmp_path):
    r = CliRunner().invoke(app, ["compress", "binary", "--tiny", "--steps", "1", "--finetune", "1", "--frames", "2",
                                 "--val-frames", "1", "--batch", "2", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["method"] == "binary-bwn" and (tmp_path / "model.safetensors").is_file()


def test_cli_compress_has_one_command_per_method_with_its_own_options():
    runner = CliRunner()
    top = runner.invoke(app, ["compress", "--help"])
    assert top.exit_code == 0 and all(m in top.output for m in ("lottery", "morphnet", "deep-compression", "binary",
                                                                 "distill"))
    own = {"lottery": "--rewind", "morphnet": "--shrink-flops", "deep-compression": "--sparsity",
           "binary": "--mode", "distill": "--teacher"}
    def has(flag: str, text: str) -> bool:
        return re.search(rf"{flag}(?![\w-])", text) is not None

    for method, flag in own.items():
        r = runner.invoke(app, ["compress", method, "--help"])
        assert r.exit_code == 0, r.output
        assert has(flag, r.output) and has("--out", r.output) and has("--steps", r.output), method
        others = [f for m, f in own.items() if m != method and has(f, r.output)]
        assert not others, (method, others)
    assert not has("--init", runner.invoke(app, ["compress", "distill", "--help"]).output)


def test_cli_compress_lottery_starts_from_init(tmp_path):
    """`compress lottery --init CKPT`: the dense training starts from the checkpoint and the tickets
    rewind to it (rewind 0: the rewind weights are the checkpoint's)."""
    from perception.nn import load_checkpoint, save_checkpoint

    torch.manual_seed(123)
    ckpt = save_checkpoint(randomize_bn(tiny(7), seed=3), tmp_path / "init.safetensors")
    args = ["compress", "lottery", "--tiny", "--steps", "1", "--rounds", "1", "--no-control", "--frames", "2",
            "--val-frames", "1", "--batch", "2"]
    r = CliRunner().invoke(app, [*args, "--init", str(ckpt), "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    state = torch.load(tmp_path / "run" / lottery.STATE_FILE, map_location="cpu", weights_only=False)
    want = load_checkpoint(ckpt).state_dict()
    assert state["theta_k"].keys() == want.keys()
    assert all(torch.equal(state["theta_k"][k], want[k]) for k in want)
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert rep["init"] == state["settings"]["init"] != "random"
    # without --init the rewind weights are a random initialisation, not the checkpoint's
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "random")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "random" / "report.json").read_text())["init"] == "random"
    # a checkpoint of another architecture, or fused, is refused before any training
    r = CliRunner().invoke(app, [*args[:2], "--init", str(ckpt), "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "does not fit --model rep-n" in r.output
    fused = save_checkpoint(reparameterize_model(tiny()), tmp_path / "fused.safetensors")
    r = CliRunner().invoke(app, [*args, "--init", str(fused), "--out", str(tmp_path / "y")])
    assert r.exit_code == 1 and "train-form" in r.output
