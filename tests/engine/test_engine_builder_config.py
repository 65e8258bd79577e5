"""The TensorRT builder configuration each target gets, checked where TensorRT cannot be installed.

`tensorrt_build.builder_config` is the one place the plan's flags meet the TensorRT API.
The stand-ins below record the calls a TensorRT 10 or 11 `IBuilderConfig` receives (flag names,
pools, profile shapes, DLA, timing cache) so each target's configuration is asserted here;
tests/test_tensorrt_engine.py runs the same function against the real TensorRT on a GPU.
"""

from __future__ import annotations

import enum
from types import SimpleNamespace

import pytest
from test_engine_targets import write_graph

from zipvlm.engine.build import builder_config
from zipvlm.engine.targets import GiB, build_plan

BuilderFlag = enum.Enum("BuilderFlag", "FP16 TF32 INT8 FP8 GPU_FALLBACK")
MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")
DeviceType = enum.Enum("DeviceType", "GPU DLA")
TRT = SimpleNamespace(BuilderFlag=BuilderFlag, MemoryPoolType=MemoryPoolType, DeviceType=DeviceType)


class RecordingConfig:
    """What an IBuilderConfig was told, flags by name. TF32 starts set, as in TensorRT 10 and 11."""

    def __init__(self):
        self.flags, self.pools, self.profiles = {"TF32"}, {}, []
        self.default_device_type, self.DLA_core, self.cache_bytes = DeviceType.GPU, -1, None

    def set_memory_pool_limit(self, pool, size):
        self.pools[pool] = size

    def set_flag(self, flag):
        self.flags.add(flag.name)

    def clear_flag(self, flag):
        self.flags.discard(flag.name)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)

    def create_timing_cache(self, data: bytes):
        self.cache_bytes = data
        return data

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        return not ignore_mismatch


class RecordingBuilder:
    def create_builder_config(self):
        return RecordingConfig()

    def create_optimization_profile(self):
        profile = SimpleNamespace(shapes={})
        profile.set_shape = lambda name, lo, opt, hi: profile.shapes.update({name: (lo, opt, hi)})
        return profile


# TensorRT 11 removed the precision flags: a builder that used one would fail on this stand-in.
StrongBuilderFlag = enum.Enum("BuilderFlag", "TF32 GPU_FALLBACK")
TRT11 = SimpleNamespace(BuilderFlag=StrongBuilderFlag, MemoryPoolType=MemoryPoolType, DeviceType=DeviceType)


def configured(tmp_path, target, trt=TRT, **flags):
    for name in ("vision.onnx", "vision.fp16.onnx", "vision.int8.onnx"):
        write_graph(tmp_path / name)
    options = {"fp16": True, "int8": False, "fp8": False, "dla": None, "max_batch": 1, **flags}
    return builder_config(trt, RecordingBuilder(), build_plan(target, bundle=tmp_path, **options))


@pytest.mark.parametrize(("target", "workspace"), [("jetson", 2), ("orin-nano", 1), ("thor", 8), ("x86", 4)])
def test_fp16_is_the_default_with_the_targets_workspace(tmp_path, target, workspace):
    built = configured(tmp_path, target)
    assert built.flags == {"FP16", "TF32"}
    assert built.pools == {MemoryPoolType.WORKSPACE: workspace * GiB}
    assert built.default_device_type is DeviceType.GPU


def test_fp32_clears_tf32_so_scores_are_computed_in_full_precision(tmp_path):
    assert configured(tmp_path, "x86", fp16=False).flags == set()


@pytest.mark.parametrize("flags", [{}, {"fp16": False}, {"int8": True}])
def test_strongly_typed_builds_set_no_precision_flag_and_clear_tf32(tmp_path, flags):
    built = configured(tmp_path, "x86", trt=TRT11, strongly_typed=True, **flags)
    assert built.flags == set() and built.pools == {MemoryPoolType.WORKSPACE: 4 * GiB}


def test_int8_sets_int8_beside_fp16(tmp_path):
    assert configured(tmp_path, "orin-nano", int8=True).flags == {"FP16", "TF32", "INT8"}


def test_dla_runs_on_the_asked_core_with_gpu_fallback(tmp_path):
    built = configured(tmp_path, "jetson", dla=1, int8=True)
    assert built.default_device_type is DeviceType.DLA and built.DLA_core == 1
    assert "GPU_FALLBACK" in built.flags


def test_one_batch_profile_optimised_for_one(tmp_path):
    (profile,) = configured(tmp_path, "x86", max_batch=8).profiles
    assert profile.shapes == {"pixel_values": ((1, 3, 16, 16), (1, 3, 16, 16), (8, 3, 16, 16))}


def test_the_timing_cache_next_to_the_plan_is_read_back(tmp_path):
    assert configured(tmp_path, "x86").cache_bytes == b""  # the first build starts empty
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "vision.x86.timing.cache").write_bytes(b"timings")
    assert configured(tmp_path, "x86").cache_bytes == b"timings"
