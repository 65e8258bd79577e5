"""What a TensorRT plan is bound to, checked without TensorRT: sidecar JSON, fingerprint, L4T
release, which plan a run picks, and engines/ staying out of the bundle's hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bundles import sample_bundle
from test_engine_targets import write_graph

from zipvlm.bundle.errors import ArgumentError
from zipvlm.bundle.format import Bundle
from zipvlm.engine.build import engine_record
from zipvlm.engine.targets import DeviceFacts, build_plan
from zipvlm.runtime.backends import BackendError, open_vision_backend
from zipvlm.runtime.backends.device import parse_tegra_release
from zipvlm.runtime.backends.fingerprint import Fingerprint, check_fingerprint, mismatches
from zipvlm.runtime.backends.tensorrt_runner import choose_target

# /etc/nv_tegra_release as JetPack 6.1 and JetPack 5.1.4 write it.
JETPACK_61 = (
    "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, "
    "DATE: Fri Sep 13 04:36:44 UTC 2024\n# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n"
)
JETPACK_514 = (
    "# R35 (release), REVISION: 6.0, GCID: 36923193, BOARD: t186ref, EABI: aarch64, "
    "DATE: Tue Jul 16 21:48:40 UTC 2024\n"
)


def test_tegra_release_gives_l4t_and_jetpack():
    assert parse_tegra_release(JETPACK_61) == {"l4t": "36.4.0", "jetpack": "6.1"}
    assert parse_tegra_release(JETPACK_514) == {"l4t": "35.6.0", "jetpack": "5.1.4"}


def test_an_unknown_l4t_keeps_its_release_and_no_jetpack_guess():
    text = "# R36 (release), REVISION: 9, GCID: 1, BOARD: generic, EABI: aarch64, DATE: x\n"
    assert parse_tegra_release(text) == {"l4t": "36.9.0", "jetpack": None}


def test_text_that_is_not_a_tegra_release_is_none():
    assert parse_tegra_release("") is None
    assert parse_tegra_release("Ubuntu 22.04.4 LTS") is None


ORIN = DeviceFacts("Orin", (8, 7))


@pytest.fixture
def record(tmp_path) -> dict:
    write_graph(tmp_path / "vision.onnx")
    config = build_plan("jetson", fp16=True, int8=False, fp8=False, dla=0, max_batch=2, bundle=tmp_path)
    return engine_record(
        config, "10.3.0", ORIN, parse_tegra_release(JETPACK_61), "ab" * 32, 93.14, 212_000_000, "0.1.0"
    )


def test_the_sidecar_json_records_what_the_issue_asks(record):
    assert record["tensorrt_version"] == "10.3.0"
    assert record["gpu"] == {"name": "Orin", "compute_capability": "8.7"}
    assert record["jetson"] == {"l4t": "36.4.0", "jetpack": "6.1"}
    assert record["onnx"] == {"file": "vision.onnx", "sha256": "ab" * 32, "opset": 18}
    assert record["precision"]["name"] == "fp16" and record["dla_core"] == 0
    assert record["max_batch"] == 2 and record["build_seconds"] == 93.1
    assert record["plan"] == {"file": "vision.jetson.plan", "bytes": 212_000_000}
    assert record["zipvlm_version"] == "0.1.0"
    json.dumps(record)  # plain JSON


def test_fingerprint_round_trips_through_the_sidecar_json(record):
    built = Fingerprint.from_meta(json.loads(json.dumps(record)), Path("x.json"))
    assert built == Fingerprint("10.3.0", "Orin", "8.7", "vision.onnx", "ab" * 32)
    assert mismatches(built, built) == []


def test_a_record_without_a_fingerprint_is_refused():
    with pytest.raises(BackendError, match="not a zipvlm engine record"):
        Fingerprint.from_meta({"target": "jetson"}, Path("engines/vision.jetson.json"))


BUILT = Fingerprint("10.3.0", "Orin", "8.7", "vision.onnx", "ab" * 32)


@pytest.mark.parametrize(
    ("here", "phrase"),
    [
        (
            Fingerprint("10.7.0", "Orin", "8.7", "vision.onnx", "ab" * 32),
            "built with TensorRT 10.3.0, this is TensorRT 10.7.0",
        ),
        (
            Fingerprint("10.3.0", "NVIDIA H100", "9.0", "vision.onnx", "ab" * 32),
            "built on Orin (8.7), this GPU is NVIDIA H100 (9.0)",
        ),
        (
            Fingerprint("10.3.0", "Orin", "8.7", "vision.onnx", "cd" * 32),
            "built from a vision.onnx with sha256 abababababab, the bundle's is cdcdcdcdcdcd",
        ),
    ],
)
def test_each_mismatch_is_named(here, phrase):
    assert mismatches(BUILT, here) == [phrase]


def test_a_plan_that_does_not_fit_is_refused_with_the_rebuild_command():
    here = Fingerprint("10.7.0", "NVIDIA H100", "9.0", "vision.onnx", "cd" * 32)
    plan = Path("/robot/bundle/engines/vision.jetson.plan")
    with pytest.raises(BackendError) as error:
        check_fingerprint(BUILT, here, plan, "jetson")
    message = str(error.value)
    assert "\n" not in message and message.count("; ") == 2  # three mismatches
    assert message.endswith("rebuild with make engine TARGET=jetson BUNDLE=/robot/bundle")
    check_fingerprint(BUILT, BUILT, plan, "jetson")  # a match passes


def touch_plans(bundle: Path, *targets: str) -> None:
    (bundle / "engines").mkdir(exist_ok=True)
    for target in targets:
        (bundle / "engines" / f"vision.{target}.plan").write_bytes(b"plan")


def test_the_only_plan_is_picked_without_target(tmp_path):
    touch_plans(tmp_path, "jetson")
    assert choose_target(tmp_path, None) == "jetson"
    assert choose_target(tmp_path, "jetson") == "jetson"


def test_several_plans_need_target(tmp_path):
    touch_plans(tmp_path, "jetson", "orin-nano")
    with pytest.raises(ArgumentError, match="plans for jetson, orin-nano: pick one with --target"):
        choose_target(tmp_path, None)
    assert choose_target(tmp_path, "orin-nano") == "orin-nano"


def test_no_plan_or_a_missing_target_says_how_to_build(tmp_path):
    with pytest.raises(BackendError, match="holds no TensorRT plan.*make engine TARGET="):
        choose_target(tmp_path, None)
    touch_plans(tmp_path, "jetson")
    with pytest.raises(BackendError, match=r"no vision\.thor\.plan \(it has jetson\).*TARGET=thor"):
        choose_target(tmp_path, "thor")


def test_engines_are_not_part_of_the_bundle_hashes(tmp_path):
    (tmp_path / "vision.onnx").write_bytes(b"graph")
    touch_plans(tmp_path, "jetson")
    written = sample_bundle(tmp_path).write()
    assert list(written.files) == ["vision.onnx"]
    (tmp_path / "engines" / "vision.jetson.plan").write_bytes(b"rebuilt on the robot")
    touch_plans(tmp_path, "orin-nano")
    Bundle.open(tmp_path)  # still valid
    (tmp_path / "vision.onnx").write_bytes(b"changed")
    with pytest.raises(Exception, match="does not match its sha256"):
        Bundle.open(tmp_path)


def test_target_without_trt_backend_is_refused(tmp_path):
    with pytest.raises(ArgumentError, match="--target picks a TensorRT plan"):
        open_vision_backend(sample_bundle(tmp_path), "ort", "cpu", 1, "jetson")
    with pytest.raises(ArgumentError, match="--backend tvm is not one of ort, trt"):
        open_vision_backend(sample_bundle(tmp_path), "tvm", "cpu", 1, None)


def test_cuda_names_this_gpu_or_says_none_is_visible():
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed here")
    from zipvlm.runtime.backends.device import Cuda

    try:
        facts = Cuda().device_facts("use --backend ort")
    except BackendError as exc:
        assert str(exc).startswith("TensorRT imports but no CUDA GPU is visible here (cuda")
        assert str(exc).endswith("): use --backend ort") and "\n" not in str(exc)
    else:
        assert facts.name and facts.compute >= (5, 0)
