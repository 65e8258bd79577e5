"""`zipvlm engine`'s build plan per target, without TensorRT: flags, profiles, illegal combinations."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from zipvlm.bundle.errors import ArgumentError, BundleError
from zipvlm.engine.targets import (
    TARGETS,
    BuildConfig,
    DeviceFacts,
    EnginePaths,
    build_plan,
    check_device,
    check_tensorrt_version,
    graph_for,
    graph_input,
    is_strongly_typed,
)
from zipvlm.runtime.backends import BackendError

SIZE = 16


def write_graph(path: Path, dims=("batch", 3, SIZE, SIZE), opset: int = 18) -> Path:
    """A one-node graph with the vision graph's input: enough for the plan, which reads only that."""
    pixels = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, list(dims))
    out = helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, list(dims))
    graph = helper.make_graph(
        [helper.make_node("Identity", ["pixel_values"], ["image_embeds"])], "vision", [pixels], [out]
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


@pytest.fixture
def bundle(tmp_path) -> Path:
    write_graph(tmp_path / "vision.onnx")
    return tmp_path


def plan(
    bundle, target="jetson", fp16=True, int8=False, fp8=False, dla=None, max_batch=1, strongly_typed=False
) -> BuildConfig:
    return build_plan(
        target,
        fp16=fp16,
        int8=int8,
        fp8=fp8,
        dla=dla,
        max_batch=max_batch,
        bundle=bundle,
        strongly_typed=strongly_typed,
    )


def test_every_target_builds_fp16_from_the_float_graph_with_a_batch_profile(bundle):
    for name, profile in TARGETS.items():
        config = plan(bundle, name, max_batch=4)
        assert config.target is profile and config.onnx_path == bundle / "vision.onnx"
        assert (config.fp16, config.int8, config.fp8, config.dla_core) == (True, False, False, None)
        assert config.input_name == "pixel_values" and config.opset == 18
        assert config.profile == ((1, 3, SIZE, SIZE), (1, 3, SIZE, SIZE), (4, 3, SIZE, SIZE))
        assert config.precision == "fp16"


def test_workspace_is_tightest_on_orin_nano_and_largest_on_thor():
    sizes = {name: profile.workspace_bytes for name, profile in TARGETS.items()}
    assert sizes["orin-nano"] == 1 << 30
    assert sizes["orin-nano"] < sizes["jetson"] < sizes["x86"] < sizes["thor"]


def test_int8_builds_from_the_qdq_graph_never_from_the_float_one(bundle):
    write_graph(bundle / "vision.int8.onnx")
    config = plan(bundle, "orin-nano", int8=True)
    assert config.onnx_path == bundle / "vision.int8.onnx"
    assert (config.fp16, config.int8) == (True, True) and config.precision == "fp16+int8"
    assert plan(bundle, "x86", fp16=False, int8=True).precision == "fp32+int8"


def test_int8_without_the_qdq_graph_says_to_run_calib_quantize(bundle):
    with pytest.raises(ArgumentError, match=r"vision\.int8\.onnx .*zipvlm calib quantize --bundle .*--calib"):
        plan(bundle, "jetson", int8=True)


@pytest.mark.parametrize("target", ["jetson", "orin-nano"])
def test_fp8_is_refused_on_orin(bundle, target):
    write_graph(bundle / "vision.fp8.onnx")
    with pytest.raises(ArgumentError, match="no FP8 tensor cores"):
        plan(bundle, target, fp8=True)


@pytest.mark.parametrize("target", ["thor", "x86"])
def test_fp8_builds_from_an_fp8_qdq_graph_where_allowed(bundle, target):
    with pytest.raises(ArgumentError, match=r"vision\.fp8\.onnx.*does not write yet"):
        plan(bundle, target, fp8=True)
    write_graph(bundle / "vision.fp8.onnx")
    config = plan(bundle, target, fp8=True)
    assert config.onnx_path.name == "vision.fp8.onnx" and config.precision == "fp16+fp8"


def test_int8_and_fp8_together_are_refused(bundle):
    write_graph(bundle / "vision.int8.onnx")
    write_graph(bundle / "vision.fp8.onnx")
    with pytest.raises(ArgumentError, match="choose one"):
        plan(bundle, "thor", int8=True, fp8=True)
    assert graph_for(bundle, int8=False, fp8=True).name == "vision.fp8.onnx"


@pytest.mark.parametrize("target", ["orin-nano", "thor", "x86"])
def test_dla_is_refused_where_there_is_none(bundle, target):
    with pytest.raises(ArgumentError, match="has no DLA"):
        plan(bundle, target, dla=0)


def test_dla_on_jetson_takes_core_0_or_1_and_fp16_or_int8(bundle):
    assert plan(bundle, "jetson", dla=1).dla_core == 1
    with pytest.raises(ArgumentError, match="DLA cores 0..1"):
        plan(bundle, "jetson", dla=2)
    with pytest.raises(ArgumentError, match="DLA cores 0..1"):
        plan(bundle, "jetson", dla=-1)
    with pytest.raises(ArgumentError, match="FP16 or INT8 only"):
        plan(bundle, "jetson", fp16=False, dla=0)


def test_max_batch_must_be_positive(bundle):
    with pytest.raises(ArgumentError, match="at least 1"):
        plan(bundle, max_batch=0)


def test_unknown_target_suggests_the_closest(bundle):
    with pytest.raises(ArgumentError, match="did you mean 'jetson'"):
        plan(bundle, "jetsen")


def test_a_bundle_without_vision_onnx_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError, match="no vision.onnx"):
        plan(tmp_path)


def test_profiles_need_static_shapes_but_batch(tmp_path):
    write_graph(tmp_path / "vision.onnx", dims=("batch", 3, "height", SIZE))
    with pytest.raises(BundleError, match="static shapes but batch"):
        plan(tmp_path)


def test_graph_input_reads_name_shape_and_opset(tmp_path):
    path = write_graph(tmp_path / "g.onnx", dims=(2, 3, 8, 8), opset=17)
    assert graph_input(path) == ("pixel_values", (2, 3, 8, 8), 17)


def test_engine_files_sit_side_by_side_in_engines(tmp_path):
    paths = EnginePaths.of(tmp_path, "orin-nano")
    assert [
        p.relative_to(tmp_path).as_posix() for p in (paths.plan, paths.meta, paths.timing_cache, paths.report)
    ] == [
        "engines/vision.orin-nano.plan",
        "engines/vision.orin-nano.json",
        "engines/vision.orin-nano.timing.cache",
        "engines/vision.orin-nano.report.txt",
    ]


ORIN, H100, L40S, A100, THOR = (
    DeviceFacts("Orin", (8, 7)),
    DeviceFacts("NVIDIA H100", (9, 0)),
    DeviceFacts("NVIDIA L40S", (8, 9)),
    DeviceFacts("NVIDIA A100", (8, 0)),
    DeviceFacts("NVIDIA Thor", (11, 0)),
)


def test_a_jetson_target_is_refused_on_a_discrete_gpu(bundle):
    check_device(plan(bundle, "jetson"), ORIN, dla_cores_here=2)
    check_device(plan(bundle, "thor"), THOR, dla_cores_here=0)
    with pytest.raises(ArgumentError, match=r"this GPU is NVIDIA H100 \(9.0\).*x86"):
        check_device(plan(bundle, "jetson"), H100, dla_cores_here=0)
    with pytest.raises(ArgumentError, match="compute capability 10.1 or 11.0"):
        check_device(plan(bundle, "thor"), ORIN, dla_cores_here=2)


def test_fp8_on_x86_needs_compute_capability_8_9(bundle):
    write_graph(bundle / "vision.fp8.onnx")
    config = plan(bundle, "x86", fp8=True)
    check_device(config, L40S, dla_cores_here=0)
    check_device(config, H100, dla_cores_here=0)
    with pytest.raises(ArgumentError, match="needs compute capability 8.9.*NVIDIA A100 is 8.0"):
        check_device(config, A100, dla_cores_here=0)


def test_dla_core_must_exist_on_this_module(bundle):
    config = plan(bundle, "jetson", dla=1)
    check_device(config, ORIN, dla_cores_here=2)
    with pytest.raises(ArgumentError, match="has 1 DLA core"):  # an Orin NX 8 GB
        check_device(config, ORIN, dla_cores_here=1)


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("8.6.2", "opset <= 17"),
        ("8.5.2.2", "LayerNormalization"),
        ("ten", "cannot read the TensorRT version"),
    ],
)
def test_tensorrt_10_and_11_build_older_ones_are_refused(version, message):
    for supported in ("10.3.0", "10.13.3.9", "11.4.0.106"):
        check_tensorrt_version(supported, 18)
    with pytest.raises(BackendError, match=message):
        check_tensorrt_version(version, 18)


def test_tensorrt_11_is_strongly_typed_10_is_not():
    assert [is_strongly_typed(v) for v in ("10.3.0", "10.13.3.9", "11.0.0", "11.4.0.106")] == [
        False,
        False,
        True,
        True,
    ]


def test_strongly_typed_fp16_builds_from_the_float16_graph(bundle):
    with pytest.raises(
        ArgumentError,
        match=r"strongly typed.*vision\.fp16\.onnx.*zipvlm export \.\.\. "
        r"--fp16.*--fp32",
    ):
        plan(bundle, "x86", strongly_typed=True)
    write_graph(bundle / "vision.fp16.onnx")
    config = plan(bundle, "x86", strongly_typed=True)
    assert config.onnx_path.name == "vision.fp16.onnx" and config.precision == "fp16"
    assert not config.tf32  # its float32 layers (the selection) stay float32
    weak = plan(bundle, "x86")
    assert weak.onnx_path.name == "vision.onnx" and weak.tf32  # TensorRT 10 takes FP16 as a flag


def test_strongly_typed_fp32_builds_from_the_exported_graph(bundle):
    config = plan(bundle, "x86", fp16=False, strongly_typed=True)
    assert config.onnx_path.name == "vision.onnx" and config.precision == "fp32" and not config.tf32


def test_strongly_typed_int8_runs_float32_between_the_qdq_layers(bundle):
    write_graph(bundle / "vision.int8.onnx")
    config = plan(bundle, "x86", int8=True, strongly_typed=True)
    assert config.onnx_path.name == "vision.int8.onnx"
    assert (config.fp16, config.int8, config.precision) == (False, True, "fp32+int8")
