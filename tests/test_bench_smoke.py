"""`make bench` machinery on tiny shapes: it runs, fills every column, and writes its plot.

No timing is asserted; the figures come from `make bench` on real-size shapes.
"""

from __future__ import annotations

from zipvlm.bench.report import COLUMNS, markdown_table, save_bar_chart
from zipvlm.bench.vision import TowerShape, bench_tower
from zipvlm.models.visionzip import VisionZipConfig

TINY = TowerShape("tiny CLIP", "clip", 112, 14, 32, 3, 2, 64, -2, 48)


def test_tower_bench_runs_and_reports_every_column(tmp_path):
    result = bench_tower(TINY, VisionZipConfig(20, 4), repeats=1, threads=1, workdir=tmp_path)
    row = result.row()
    assert result.tokens == 65 and result.kept == 24
    assert all(row[key] > 0 for key, _, _ in COLUMNS if key not in ("tower", "tokens", "kept"))
    table = markdown_table([row])
    assert table.count("\n") == 2 and "tiny CLIP" in table
    assert save_bar_chart([row], tmp_path / "vision.png").stat().st_size > 1000
