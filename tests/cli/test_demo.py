"""`zipvlm demo` (what `make demo` runs): build, export, verify and stream, offline, exit 0."""

from __future__ import annotations

import re

import pytest

from zipvlm.cli.main import main

pytestmark = pytest.mark.slow  # exports or benchmarks real bundles


def test_demo_builds_exports_and_streams_answers(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path), "--seconds", "2"]) == 0
    err = capsys.readouterr().err
    assert "kept indices identical" in err
    answers = re.findall(
        r"frame \d+ age \d+ ms\] .*\(64 image tokens(, \d+ prompt tokens cached)?, "
        r"first token \d+ ms",
        err,
    )
    assert len(answers) >= 2  # one question every 0.5 s for 2 s
    assert answers[0] == "" and answers[1] != ""  # the prompt's prefix: prefilled once, then cached
    assert "random weights" in err and "zipvlm export --model" in err


def test_the_qwen_demo_exports_for_the_synthetic_camera_and_streams(tmp_path, capsys):
    assert main(["demo", "--family", "qwen2.5-vl", "--workdir", str(tmp_path), "--seconds", "2"]) == 0
    err = capsys.readouterr().err
    assert "640x480 frames resized to 644x476: 1564 patches, 23x17 = 391 merged tokens" in err
    assert "kept indices identical" in err and "positions.onnx" in err
    answers = re.findall(r"frame \d+ age \d+ ms\] .*\(43 image tokens(, \d+ prompt tokens cached)?", err)
    assert len(answers) >= 2 and answers[1] != ""  # the prompt's prefix is reused from the second answer
    assert "--image-size 640x480" in err


def test_the_demo_families_are_the_command_lines():
    from zipvlm.cli.demo import DEMO_FAMILIES
    from zipvlm.export.demo import DEMOS

    assert tuple(DEMOS) == DEMO_FAMILIES


@pytest.mark.parametrize("family", ["llava-next", "llava-onevision"])
def test_the_anyres_demo_models_export_for_the_test_pattern(tmp_path, family):
    """What `zipvlm demo --family` exports: a folder its export accepts for the 640x480 source
    (the export and stream themselves are those of the tests/runtime any-res bundles)."""
    from zipvlm.export.demo import DEMOS
    from zipvlm.models.anyres import anyres_geometry
    from zipvlm.models.llava import open_llava_folder

    demo = DEMOS[family]
    folder = open_llava_folder(demo.build(tmp_path / family))
    assert anyres_geometry(folder, demo.options["image_size"]).num_views == 5
    assert "--image-size 640x480" in demo.real_export
