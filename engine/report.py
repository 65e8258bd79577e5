"""Static checks of the graph an engine is built from, and the build report that records them.

They run everywhere, before TensorRT is needed: the export's structural checks
(onnx.checker, TensorRT-safe op set, constant TopK K, static shapes but batch),
the Q/DQ placement checks for vision.int8.onnx (per-channel weights, selection float), and
`polygraphy inspect model` (its plain ONNX view, which needs no TensorRT). What
they found goes into `engines/vision.<target>.report.txt`.
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from zipvlm.bundle.format import INT8_GRAPH, Bundle
from zipvlm.engine.targets import BuildConfig
from zipvlm.runtime.backends import BackendError

log = logging.getLogger(__name__)

# polygraphy's console entry point, run with this interpreter (the venv's script may not be on PATH).
_POLYGRAPHY = "import sys; from polygraphy.tools import main; sys.argv[0] = 'polygraphy'; sys.exit(main())"
POLYGRAPHY_TIMEOUT_S = 900


@dataclass(frozen=True)
class StaticReport:
    path: Path  # the report file written
    op_types: int
    qdq: str  # what the Q/DQ placement check said, or why it did not run
    onnx_sha256: str  # of the graph checked, which the plan is built from


def polygraphy_inspect(onnx_path: Path) -> str:
    """`polygraphy inspect model PATH --show layers`: the graph's I/O and every node, as text."""
    if importlib.util.find_spec("polygraphy") is None:
        raise BackendError(
            "polygraphy is not installed, and the build report needs it: "
            "pip install polygraphy (or pip install -e '.[engine]')"
        )
    command = [sys.executable, "-c", _POLYGRAPHY, "inspect", "model", str(onnx_path), "--show", "layers"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=POLYGRAPHY_TIMEOUT_S)
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        last = output.splitlines()[-1] if output else f"exit code {done.returncode}"
        raise BackendError(f"polygraphy inspect model failed on {onnx_path.name}: {last}")
    return "\n".join(line for line in output.splitlines() if "'colored' module" not in line)


def _graph_checks(onnx_path: Path, bundle: Bundle):
    """The export's own graph checks (onnx only): (GraphReport, Q/DQ verdict)."""
    import onnx

    from zipvlm.bundle.graph_checks import QDQ_OPS, check_qdq_placement, check_vision_graph

    expected = bundle.vision_io()
    if onnx_path.name != INT8_GRAPH:
        return check_vision_graph(onnx_path, expected), "not applicable (float graph)"
    graph = check_vision_graph(onnx_path, expected, extra_ops=QDQ_OPS)
    weights = check_qdq_placement(onnx.load(str(onnx_path), load_external_data=False))
    return graph, f"passed ({weights} per-channel weights; selection and softmax in float)"


def run_static_checks(config: BuildConfig, bundle: Bundle, zipvlm_version: str) -> StaticReport:
    """Check the graph `config` builds from, write the report, and return where it went."""
    onnx_path = config.onnx_path
    graph, qdq = _graph_checks(onnx_path, bundle)
    onnx_sha256 = bundle.sha256(onnx_path.name)
    inspect = polygraphy_inspect(onnx_path)
    lo, opt, hi = config.profile
    dla = f"core {config.dla_core} with GPU fallback" if config.dla_core is not None else "no"
    lines = [
        f"zipvlm {zipvlm_version} engine build report: {onnx_path.name} for --target {config.target.name} "
        f"({config.target.devices})",
        f"written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"onnx: {onnx_path.name}, opset {config.opset}, sha256 {onnx_sha256}",
        "checks: onnx.checker, TensorRT-safe op set (no NonZero/Loop/If/Compress/Unique), TopK with "
        "constant K, static shapes but batch: passed",
        f"Q/DQ placement: {qdq}",
        "inputs:  " + ", ".join(f"{name} {shape}" for name, shape in graph.inputs.items()),
        "outputs: " + ", ".join(f"{name} {shape}" for name, shape in graph.outputs.items()),
        f"op counts ({len(graph.op_counts)} types): "
        + ", ".join(f"{op} {count}" for op, count in graph.op_counts.items()),
        f"plan: precision {config.precision}, {config.input_name} min {list(lo)} opt {list(opt)} "
        f"max {list(hi)}, workspace {config.target.workspace_bytes / (1 << 30):g} GiB, DLA {dla}",
        "",
        f"--- polygraphy inspect model {onnx_path.name} --show layers ---",
        inspect,
        "",
    ]
    report = config.paths.report
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines))
    return StaticReport(report, len(graph.op_counts), qdq, onnx_sha256)
