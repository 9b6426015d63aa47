"""`perception export`: the fused model to ONNX (checked) or a TensorRT engine."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer
from rich.table import Table

from perception.cli.app import app, console, fail, register_model_formats, setup_logging

log = logging.getLogger("perception.cli.export")


@app.command("export", help="Export the fused (reparameterized) model to ONNX, checked (onnx.checker, no "
                            "BatchNorm, backbone only Conv/Relu, ONNX Runtime == torch), or build a TensorRT engine.")
def export_command(
    model: str = typer.Option("rep-s", "--model", "-m", help="Registered model name (shipped weights, or random "
                              "weights with a warning) or a model file (checkpoint, or a `perception compress` "
                              "file such as .pdc)."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx, tensorrt (needs TensorRT; builds from ONNX) or "
                            "safetensors (the shipped fp16 train-form file of a trained train-form checkpoint into the "
                            "--out folder, e.g. models/rep-s; the fused form is derived on load)."),
    out: Path = typer.Option(None, "--out", "-o", help="Output file (.onnx, or .engine for tensorrt); default "
                             "exports/<model>-<H>x<W>.onnx"),
    batch: int = typer.Option(1, "--batch", "-b", help="Static batch (images per forward = cameras x time)."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Dynamic batch axis instead of --batch."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (17..21)."),
    size: str = typer.Option("256x448", "--size", help="Input HxW, multiples of 32 (anchors are baked in)."),
    decode: bool = typer.Option(True, "--decode/--raw", help="Also output decoded boxes/scores/3D attributes "
                                "(before NMS), or only raw det + depth."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Simplify with onnxslim."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check ONNX Runtime against torch (fp32)."),
    precision: str = typer.Option("fp16", "--precision", help="TensorRT: fp32, fp16 or int8 (int8 needs a Q/DQ "
                                  "ONNX from perception.deploy.quantize)."),
    onnx_file: Path = typer.Option(None, "--onnx", help="TensorRT: build from this ONNX file instead of exporting."),
    int8: bool = typer.Option(False, "--int8", help="Also write FILE-int8.onnx: post-training static INT8 (Q/DQ, "
                              "per-channel weights) calibrated on synthetic + shared real frames, with its "
                              "INT8-vs-fp32 output fidelity."),
    calib_frames: int = typer.Option(4, "--calib-frames", help="--int8: synthetic multi-camera frames to "
                                     "calibrate on (plus the shared real images when present)."),
    int8_activation: str = typer.Option("uint8", "--int8-activation", help="--int8: uint8 (fastest on x86 ONNX "
                                        "Runtime) or int8 (symmetric, for TensorRT)."),
    int8_calibration: str = typer.Option("minmax", "--int8-calibration", help="--int8: activation ranges from "
                                         "minmax, percentile (99.999) or entropy calibration."),
    int8_keep_fp32: str = typer.Option("", "--int8-keep-fp32", help="--int8: comma-separated substrings of conv "
                                       "names to leave in float besides the prediction convs (e.g. reg_conv: "
                                       "the 3D regression towers)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    setup_logging(verbose)
    from perception.geometry.resize import parse_size
    from perception.deploy.export import ExportError, export_from_spec

    register_model_formats()  # --model FILE.pdc and the other compressed files
    if fmt not in ("onnx", "tensorrt", "safetensors"):
        fail(f"--format must be onnx, tensorrt or safetensors, got {fmt!r}")
    if fmt == "safetensors":
        _release(model, out)
        return
    if batch != 1 and dynamic_batch:
        fail("--batch and --dynamic-batch exclude each other (a dynamic batch has no fixed size)")
    try:
        h, w = parse_size(size)
    except ValueError as exc:
        fail(str(exc))
    stem = Path(model).stem if Path(model).suffix else model
    onnx_out = out if (out is not None and fmt == "onnx") else Path("exports") / f"{stem}-{h}x{w}.onnx"
    if fmt == "tensorrt":
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            fail("--format tensorrt needs the TensorRT Python package (JetPack ships it; elsewhere pip install "
                 "tensorrt); export ONNX here and build the engine on the device (docs/jetson.md)")
    result = None
    if onnx_file is None:
        try:
            with console.status(f"exporting {model} ({h}x{w})"):
                result = export_from_spec(model, onnx_out, size=(h, w), batch=batch, dynamic_batch=dynamic_batch,
                                          opset=opset, decode=decode, simplify=simplify, verify=verify)
        except (ExportError, ValueError, FileNotFoundError) as exc:
            fail(str(exc))
        _print_result(result)
        onnx_file = Path(result.path)
        Path(str(onnx_file) + ".json").write_text(json.dumps(result.to_dict(), indent=2))
    elif not onnx_file.is_file():
        fail(f"--onnx {onnx_file}: file not found")
    if int8:
        onnx_file = _quantize(onnx_file, (h, w), calib_frames, int8_activation, int8_calibration,
                              tuple(p for p in int8_keep_fp32.split(",") if p))
    if fmt == "tensorrt":
        from perception.deploy.backends import build_engine

        engine = out or onnx_file.with_suffix(f".{precision}.engine")
        max_b = batch if not dynamic_batch else 6
        try:
            path = build_engine(onnx_file, engine, precision=precision, batch_range=(1, max_b, max_b))
        except (RuntimeError, ValueError) as exc:
            fail(str(exc))
        console.print(f"TensorRT {precision} engine: {path}")


def _release(model: str, out: Path | None) -> None:
    from perception.nn.checkpoint import release_checkpoint

    if out is None:
        fail("--format safetensors needs --out FOLDER (e.g. models/rep-s)")
    if not Path(model).is_file():
        fail(f"--format safetensors needs --model CHECKPOINT (a train-form .safetensors file), got {model!r}")
    try:
        report = release_checkpoint(model, out)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    f = report["files"]["train"]
    console.print(f"{f['path']}  {f['bytes'] / 1e6:.1f} MB (train form; fused on load)", highlight=False)
    for form, errors in report["max_rel_error"].items():
        err = ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
        console.print(f"  {form:5s} fp16 vs fp32 max rel. error: {err}", highlight=False)


def _quantize(fp32: Path, size: tuple[int, int], frames: int, activation: str, method: str = "minmax",
              keep_fp32: tuple[str, ...] = ()) -> Path:
    from perception.deploy.export import read_metadata
    from perception.deploy.quantize import calibration_batches, fidelity, quantize_onnx

    if activation not in ("uint8", "int8"):
        fail(f"--int8-activation must be uint8 or int8, got {activation!r}")
    if method not in ("minmax", "percentile", "entropy"):
        fail(f"--int8-calibration must be minmax, percentile or entropy, got {method!r}")
    meta = read_metadata(fp32)
    if meta.get("perception.batch") not in (None, "dynamic"):
        fail("--int8 needs a dynamic-batch export (add --dynamic-batch): calibration feeds batches of 6")
    out = fp32.with_name(fp32.stem + "-int8.onnx")
    with console.status(f"calibrating on {frames} synthetic frames + shared real images"):
        feeds = calibration_batches(size, synth_frames=frames, real=True, batch=6)
        held_out = feeds[-1:] if len(feeds) > 1 else feeds
        result = quantize_onnx(fp32, out, feeds[:-1] or feeds, activation=activation, method=method,
                              keep_fp32=keep_fp32)
        fid = fidelity(fp32, out, held_out)
    console.print(f"INT8 model: {out} ({result.calibration_images} calibration images, {activation} activations, "
                  f"{method} calibration, "
                  f"Q/DQ nodes {result.node_counts.get('QuantizeLinear')}/{result.node_counts.get('DequantizeLinear')})")
    console.print("INT8 vs fp32 on held-out images: " + ", ".join(f"{k} {v:.4g}" for k, v in fid.items()))
    return out


def _print_result(r) -> None:  # noqa: ANN001 - ExportResult, imported lazily
    table = Table(title=f"{r.model} -> {r.path}  (opset {r.opset}, "
                        f"{'dynamic batch' if r.batch is None else f'batch {r.batch}'}, {r.size[0]}x{r.size[1]}, "
                        f"{'simplified' if r.simplified else 'not simplified'}, hash {r.model_hash})")
    table.add_column("tensor")
    table.add_column("shape")
    table.add_column("ORT vs torch max |diff|", justify="right")
    for name, shape in r.inputs.items():
        table.add_row(f"in  {name}", str(shape), "")
    for name, shape in r.outputs.items():
        diff = r.parity.get(name)
        table.add_row(f"out {name}", str(shape), "" if diff is None else f"{diff:.2e}")
    console.print(table)
    console.print(f"reparameterization check passed: no BatchNormalization; backbone nodes "
                  f"{r.backbone_node_counts} (only Conv/Relu)")
    console.print(f"all nodes: {r.node_counts}")
    if not r.pretrained:
        console.print("[yellow]warning:[/] random weights (no shipped checkpoint): graph and speed are "
                      "representative, outputs are not")
