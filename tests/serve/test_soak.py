"""Soak: 2,000 answers about synthetic frames in a runtime process; its memory must not grow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ANSWERS = 2000
EARLY = 200


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_rss_grows_under_ten_percent_from_answer_200_to_2000(tiny_bundles):
    command = [
        sys.executable,
        "-m",
        "zipvlm.cli",
        "stream",
        "--bundle",
        str(tiny_bundles["siglip-qwen2"]),
        "--source",
        "synthetic",
        "--fps",
        "60",
        "--prompt",
        "What moves?",
        "--max-new-tokens",
        "1",
        "--json",
        "--max-frames",
        str(ANSWERS + 1),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss, errors, answered = {}, 0, 0
    for line in process.stdout:
        answered += 1
        errors += "error" in json.loads(line)
        if answered in (EARLY, ANSWERS):
            rss[answered] = rss_kb(process.pid)
    assert process.wait(timeout=60) == 0, process.stderr.read()
    assert answered == ANSWERS + 1 and errors == 0
    growth = rss[ANSWERS] / rss[EARLY] - 1
    print(
        f"RSS at answer {EARLY}: {rss[EARLY] / 1024:.0f} MB, at {ANSWERS}: "
        f"{rss[ANSWERS] / 1024:.0f} MB ({growth:+.1%})"
    )
    assert growth < 0.10
