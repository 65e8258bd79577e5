"""`zipvlm engine` and `--backend trt` where TensorRT is absent: arguments first, then the static
checks and the report, then one line saying where to build (exit 2)."""

from __future__ import annotations

import re
import shutil
import sys

import cv2
import numpy as np
import onnx
import pytest
from bundles import rehash
from onnx import TensorProto, helper

from zipvlm.bundle.format import Bundle, sha256_file
from zipvlm.cli.main import main


@pytest.fixture
def bundle(tiny_bundles, tmp_path):
    """A private copy: engine builds write engines/ into the bundle."""
    return shutil.copytree(tiny_bundles["clip-llama"], tmp_path / "bundle")


@pytest.fixture
def no_tensorrt(monkeypatch):
    """TensorRT absent even where it is installed: `import tensorrt` fails as it does here."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def one_line_error(capsys, argv) -> tuple[str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, captured.err
    return err, captured.out


def test_without_tensorrt_the_checks_and_report_run_then_one_line(bundle, no_tensorrt, capsys):
    err, out = one_line_error(
        capsys, ["engine", "--bundle", str(bundle), "--target", "jetson", "--max-batch", "4"]
    )
    report = bundle / "engines" / "vision.jetson.report.txt"
    assert err == (
        f"zipvlm engine: error: TensorRT is not installed here (import tensorrt failed): "
        f"build the engine on the target, e.g. on the Jetson: make engine TARGET=jetson "
        f"BUNDLE={bundle}; static checks passed, report in {report}"
    )
    assert out.startswith("static checks passed: vision.onnx, ") and str(report) in out
    text = report.read_text()
    assert "static shapes but batch: passed" in text
    assert f"sha256 {sha256_file(bundle / 'vision.onnx')}" in text  # the manifest's, equal to the file's
    assert "inputs:  pixel_values ['batch', 3, 336, 336]" in text
    assert "outputs: image_embeds ['batch', 64, 64], keep_indices ['batch', 54]" in text
    assert re.search(r"op counts \(\d+ types\): .*MatMul \d+, .*TopK 2", text)
    assert "max [4, 3, 336, 336]" in text and "workspace 2 GiB" in text
    assert "--- polygraphy inspect model vision.onnx --show layers ---" in text
    assert "pixel_values [dtype=float32, shape=('batch', 3, 336, 336)]" in text  # polygraphy's own view
    assert sorted(p.name for p in (bundle / "engines").iterdir()) == ["vision.jetson.report.txt"]
    Bundle.open(bundle)  # the report does not disturb the bundle's hashes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "jetson", "--int8"], "vision.int8.onnx .*zipvlm calib quantize --bundle"),
        (["--target", "jetson", "--fp8"], "no FP8 tensor cores"),
        (["--target", "orin-nano", "--dla", "0"], "Jetson Orin Nano .* has no DLA"),
        (["--target", "jetson", "--fp16", "--fp32"], "contradict"),
        (["--target", "jetson", "--calib", "frames"], "--calib FRAMES quantizes for --int8"),
        (["--target", "x86", "--max-batch", "0"], "at least 1"),
        (["--target", "orin-nano", "--int8", "--calib", "frames", "--dla", "0"], "has no DLA"),
    ],
)
def test_bad_arguments_stop_before_any_check_or_file(bundle, no_tensorrt, capsys, args, message):
    err, _ = one_line_error(capsys, ["engine", "--bundle", str(bundle), *args])
    assert err.startswith("zipvlm engine: error: ")
    assert re.search(message, err), err
    assert not (bundle / "engines").exists() and not (bundle / "vision.int8.onnx").exists()


def test_a_graph_tensorrt_cannot_compile_fails_the_static_checks(bundle, no_tensorrt, capsys):
    pixels = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 336, 336])
    where = helper.make_tensor_value_info("where", TensorProto.INT64, [4, "n"])
    graph = helper.make_graph(
        [helper.make_node("NonZero", ["pixel_values"], ["where"])], "masked", [pixels], [where]
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), bundle / "vision.onnx")
    rehash(bundle)
    err, _ = one_line_error(capsys, ["engine", "--bundle", str(bundle), "--target", "x86"])
    assert "outside the TensorRT-safe set: NonZero" in err and "TensorRT is not installed" not in err


def test_a_tampered_bundle_is_refused_first(bundle, no_tensorrt, capsys):
    with open(bundle / "vision.onnx", "ab") as handle:
        handle.write(b"\0")
    err, _ = one_line_error(capsys, ["engine", "--bundle", str(bundle), "--target", "jetson"])
    assert "vision.onnx does not match its sha256" in err


def test_run_with_the_trt_backend_without_tensorrt_is_one_line(bundle, no_tensorrt, tmp_path, capsys):
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.full((64, 96, 3), 90, np.uint8))
    err, _ = one_line_error(
        capsys,
        [
            "run",
            "--bundle",
            str(bundle),
            "--image",
            str(image),
            "--prompt",
            "What is this?",
            "--backend",
            "trt",
        ],
    )
    assert err == (
        "zipvlm run: error: TensorRT is not installed here (import tensorrt failed): "
        "--backend trt runs where its engine was built (JetPack's TensorRT on the Jetson); "
        "here use --backend ort"
    )


@pytest.mark.parametrize("command", ["run", "chat", "stream", "serve"])
def test_every_answering_command_takes_backend_target_and_vision_graph(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = capsys.readouterr().out
    assert "--backend {ort,trt}" in help_text and "--target TARGET" in help_text
    assert "--vision-graph {float,int8}" in help_text


def test_int8_with_calib_quantizes_first_then_checks_qdq_placement(bundle, no_tensorrt, tmp_path, capsys):
    from zipvlm.calib.collect import CollectOptions, collect

    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        cv2.imwrite(str(tmp_path / "images" / f"{i:02d}.png"), rng.integers(0, 255, (96, 128, 3), np.uint8))
    frames = collect(CollectOptions(source=str(tmp_path / "images"), frames=12, out=tmp_path / "frames")).out
    argv = ["engine", "--bundle", str(bundle), "--target", "orin-nano", "--int8"]
    assert main([*argv, "--calib", str(frames)]) == 2
    captured = capsys.readouterr()
    assert "quantizing the vision graph" in captured.out
    assert "TensorRT is not installed here" in captured.err.splitlines()[-1]
    report = (bundle / "engines" / "vision.orin-nano.report.txt").read_text()
    assert report.startswith("zipvlm ") and "engine build report: vision.int8.onnx" in report
    assert re.search(r"Q/DQ placement: passed \(\d+ per-channel weights", report)
    assert "precision fp16+int8" in report and "workspace 1 GiB" in report
    err, out = one_line_error(capsys, argv)  # the Q/DQ graph is there now: no --calib needed
    assert "quantizing" not in out and "static checks passed: vision.int8.onnx" in out


@pytest.fixture
def tensorrt_stand_in(monkeypatch):
    """Real cuda-python with no driver or GPU behind it, and a bare `tensorrt` stand-in module that
    gives only its version (TensorRT cannot be installed here), so the import succeeds."""
    import types

    runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed here")
    if runtime.cudaGetDeviceCount()[0] == runtime.cudaError_t.cudaSuccess:
        pytest.skip("a CUDA GPU is visible here: tests/test_tensorrt_engine.py builds for real")

    def install(version: str) -> None:
        module = types.ModuleType("tensorrt")
        module.__version__ = version
        monkeypatch.setitem(sys.modules, "tensorrt", module)

    return install


def no_gpu_line(bundle, target: str) -> str:
    build = re.escape(f"make engine TARGET={target} BUNDLE={bundle}")
    return (
        r"zipvlm engine: error: TensorRT imports but no CUDA GPU is visible here "
        rf"\(cuda\w+\): build on the target GPU \({build}\); static checks passed, "
        rf"report in .*vision\.{target}\.report\.txt"
    )


def test_with_tensorrt_10_but_no_gpu_the_build_stops_with_one_line(bundle, tensorrt_stand_in, capsys):
    tensorrt_stand_in("10.3.0")
    err, out = one_line_error(capsys, ["engine", "--bundle", str(bundle), "--target", "x86"])
    assert out.startswith("static checks passed: vision.onnx")
    assert re.fullmatch(no_gpu_line(bundle, "x86"), err), err
    assert not (bundle / "engines" / "vision.x86.plan").exists()


def test_tensorrt_11_builds_fp16_from_the_float16_graph(bundle, tensorrt_stand_in, capsys):
    from zipvlm.export.fp16 import convert_to_fp16
    from zipvlm.export.llava import HALF_SCOPES

    tensorrt_stand_in("11.4.0.106")
    argv = ["engine", "--bundle", str(bundle), "--target", "x86"]
    err, out = one_line_error(capsys, argv)
    assert "strongly typed" in err and "zipvlm export ... --fp16" in err and out == ""
    convert_to_fp16(bundle / "vision.onnx", bundle / "vision.fp16.onnx", HALF_SCOPES)
    rehash(bundle)
    err, out = one_line_error(capsys, argv)
    assert out.startswith(
        "TensorRT 11.4.0.106 is strongly typed: the plan runs vision.fp16.onnx's own "
        "types (fp16; float32 layers without TF32)\nstatic checks passed: vision.fp16.onnx"
    )
    assert re.fullmatch(no_gpu_line(bundle, "x86"), err), err
    assert "precision fp16" in (bundle / "engines" / "vision.x86.report.txt").read_text()
