"""The runtime runs on the robot without PyTorch."""

import subprocess
import sys


def test_importing_the_runtime_does_not_import_torch():
    code = ("import sys, zipvlm.runtime, zipvlm.runtime.bundle, zipvlm.runtime.cli, "
            "zipvlm.runtime.preprocess, zipvlm.runtime.prompt; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "False"
