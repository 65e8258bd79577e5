"""`zipvlm export` end to end: the bundle it writes, and one clear line for each bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from zipvlm.bundle.format import FORMAT_VERSION, Bundle
from zipvlm.cli.main import main


def export_args(model, out, dominant=54, contextual=10):
    return [
        "export",
        "--model",
        str(model),
        "--dominant",
        str(dominant),
        "--contextual",
        str(contextual),
        "--out",
        str(out),
    ]


@pytest.fixture(scope="module")
def bundle(tiny_folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "clip.bundle"
    assert main(export_args(tiny_folders["clip-llama"], out)) == 0
    return out


def test_export_writes_a_verified_bundle(bundle, tiny_folders):
    Bundle.open(bundle)  # checks every sha256
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["visionzip"] == {
        "enabled": True,
        "dominant": 54,
        "contextual": 10,
        "num_image_tokens": 64,
    }
    assert manifest["vision"]["num_tokens"] == 577 and manifest["vision"]["feature_layer"] == -2
    assert manifest["llm"]["hidden_size"] == 64
    assert set(manifest["files"]) >= {"vision.onnx", "tokenizer.json", "preprocessor_config.json"}
    tokenizer = json.loads((tiny_folders["clip-llama"] / "tokenizer.json").read_text())
    image_id = next(t["id"] for t in tokenizer["added_tokens"] if t["content"] == "<image>")
    assert manifest["image_token_id"] == image_id
    assert manifest["chat_template"].startswith("{% for message in messages %}")


def test_manifest_preprocessing_comes_from_the_folder(bundle):
    pre = Bundle.open(bundle).preprocess
    assert pre.resize == {"shortest_edge": 336}
    assert pre.center_crop == {"height": 336, "width": 336}
    assert pre.mean == (0.48145466, 0.4578275, 0.40821073)
    assert pre.resample == "bicubic" and pre.rescale_factor == pytest.approx(1 / 255)


@pytest.mark.slow
def test_export_logs_each_stage_with_time(tiny_folders, tmp_path, capsys):
    assert main(export_args(tiny_folders["siglip-qwen2"], tmp_path / "b", 108, 20) + ["--fp16"]) == 0
    err = capsys.readouterr().err
    for stage in ("load", "trace", "check", "verify", "fp16", "bundle"):
        assert any(line.startswith(stage) and " s  " in line for line in err.splitlines()), stage
    assert "kept indices identical" in err and "max |image_embeds diff|" in err
    assert Bundle.open(tmp_path / "b").graphs["vision.fp16.onnx"]["dtype"] == "float16"


@pytest.mark.slow
def test_export_over_an_existing_bundle_replaces_it(bundle, tiny_folders, tmp_path):
    out = tmp_path / "again"
    assert main(export_args(tiny_folders["clip-llama"], out)) == 0
    assert main(export_args(tiny_folders["clip-llama"], out, 108, 20)) == 0
    assert Bundle.open(out).selection.num_image_tokens == 128
    assert [p.name for p in tmp_path.iterdir()] == ["again"]  # no temporary dirs left


def _one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_missing_folder(capsys, tmp_path):
    err = _one_line_error(capsys, export_args(tmp_path / "nope", tmp_path / "out"))
    assert "model folder not found" in err


def test_folder_without_config(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    err = _one_line_error(capsys, export_args(tmp_path / "empty", tmp_path / "out"))
    assert "no config.json" in err


def test_unsupported_model_type_names_the_supported_ones(capsys, tmp_path):
    folder = tmp_path / "gpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    err = _one_line_error(capsys, export_args(folder, tmp_path / "out"))
    assert "'gpt2'" in err and "supported: LLaVA" in err and "SigLIP" in err
    assert "LLaVA-NeXT ('llava_next')" in err and "LLaVA-OneVision ('llava_onevision')" in err


def test_an_anyres_folder_needs_the_camera_size(capsys, anyres_folders, tmp_path):
    err = _one_line_error(capsys, export_args(anyres_folders["llava-next"], tmp_path / "out"))
    assert "is llava_next, whose views depend on the image's size" in err and "--image-size WxH" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("name", "tokens"), [("llava-next", 577), ("llava-onevision", 729)])
def test_dominant_and_contextual_must_fit_one_view(capsys, anyres_folders, tmp_path, name, tokens):
    argv = export_args(anyres_folders[name], tmp_path / "out", tokens - 80, 80) + ["--image-size", "640x480"]
    assert f"below the tower's {tokens} tokens" in _one_line_error(capsys, argv)


def test_pinpoints_the_model_and_its_processor_disagree_on_are_refused(capsys, anyres_folders, tmp_path):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(anyres_folders["llava-next"], folder)
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    processor["image_grid_pinpoints"] = processor["image_grid_pinpoints"][:2]
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    argv = export_args(folder, tmp_path / "out") + ["--image-size", "640x480"]
    assert "image_grid_pinpoints differ between config.json and preprocessor_config.json" in (
        _one_line_error(capsys, argv)
    )


@pytest.mark.parametrize(
    ("family", "dominant", "contextual", "message"),
    [
        ("siglip-qwen2", 0, 10, "--dominant must be at least 1"),
        ("clip-llama", 1, 10, "--dominant must be at least 2 (the CLS token counts as one)"),
        ("clip-llama", 54, 0, "--contextual must be at least 1"),
        ("clip-llama", 500, 77, "below the tower's 577 tokens"),
        ("siglip-qwen2", 500, 76, "below the tower's 576 tokens"),
    ],
)
def test_out_of_range_token_counts(capsys, tiny_folders, tmp_path, family, dominant, contextual, message):
    argv = export_args(tiny_folders[family], tmp_path / "out", dominant, contextual)
    assert message in _one_line_error(capsys, argv)


def test_unwritable_out(capsys, tiny_folders, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    err = _one_line_error(capsys, export_args(tiny_folders["clip-llama"], blocker / "bundle"))
    assert "cannot create --out" in err


def test_out_that_exists_and_is_not_a_bundle(capsys, tiny_folders, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    err = _one_line_error(capsys, export_args(tiny_folders["clip-llama"], tmp_path / "photos"))
    assert "exists and is not a zipvlm bundle" in err
    assert (tmp_path / "photos" / "cat.jpg").exists()


def test_bad_flag_value_is_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--model", str(tmp_path), "--out", str(tmp_path), "--dominant", "many"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "--help" in err


def test_console_script_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "zipvlm.cli", *export_args(tmp_path / "missing", tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"zipvlm export: error: model folder not found: {tmp_path / 'missing'}"
    ]


def test_misspelt_command_suggests_the_closest(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["expor"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "did you mean 'export'?" in err


def test_no_zip_refuses_token_counts(capsys, tiny_folders, tmp_path):
    argv = export_args(tiny_folders["clip-llama"], tmp_path / "out") + ["--no-zip"]
    assert "--no-zip keeps every token" in _one_line_error(capsys, argv)


@pytest.mark.parametrize(
    "value",
    ["640", "640x", "x480", "640x0", "0x480", "640x-480", "640x480x3", "9000x480", "640.5x480", "WxH"],
)
def test_a_malformed_image_size_is_one_line(capsys, tiny_folders, tmp_path, value):
    argv = export_args(tiny_folders["clip-llama"], tmp_path / "out") + ["--image-size", value]
    with pytest.raises(SystemExit) as exit_code:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_code.value.code == 2 and len(err.splitlines()) == 1
    assert "--image-size: expected WIDTHxHEIGHT in pixels" in err and not (tmp_path / "out").exists()


def test_image_size_on_a_fixed_square_tower_is_refused_before_tracing(capsys, tiny_folders, tmp_path):
    argv = export_args(tiny_folders["siglip-qwen2"], tmp_path / "out") + ["--image-size", "640X480"]
    err = _one_line_error(capsys, argv)
    assert "--image-size fixes the grid" in err and "takes 336x336" in err and "drop --image-size" in err
    assert not (tmp_path / "out").exists()
