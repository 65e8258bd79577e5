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
