"""Where a graph's time goes: onnxruntime's per-node profile, grouped by module scope.

Timing (b) against (a) end to end is noisy at the few-percent level on a shared
CPU; the profile measures the selection's own kernels directly.
"""

from __future__ import annotations

import ast
import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

SCOPE_KEY = "pkg.torch.onnx.name_scopes"
GROUPS = ("selector", "projector")  # everything else counts as "encoder"


def node_groups(path: Path) -> dict[str, str]:
    """Node name -> 'selector' (VisionZip), 'projector' or 'encoder', from the node metadata."""
    model = onnx.load(str(path), load_external_data=False)
    groups = {}
    for node in model.graph.node:
        scopes = next((ast.literal_eval(p.value) for p in node.metadata_props if p.key == SCOPE_KEY), [])
        groups[node.name] = next((g for g in GROUPS if any(s.startswith(g) for s in scopes)), "encoder")
    return groups


def time_by_group(path: Path, pixels: np.ndarray, threads: int, workdir: Path) -> dict[str, float]:
    """Kernel milliseconds per group for one profiled run (after one warm-up run)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(workdir / "profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: pixels}
    session.run(None, feed)
    session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    last_run = kernels[len(kernels) // 2 :]
    groups = node_groups(path)
    totals: Counter[str] = Counter()
    for event in last_run:
        totals[groups.get(event["name"].removesuffix("_kernel_time"), "encoder")] += event["dur"]
    return {group: totals[group] / 1000 for group in ("encoder", *GROUPS)}
