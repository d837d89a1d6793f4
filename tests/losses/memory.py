"""Peak-memory measurement of a loss step in a fresh Python process, shared by the tiled-kernel
memory regression tests.

The script body runs after a prelude that imports torch and ``contrastlab.losses as L`` and
defines ``status_mb(key)`` (a /proc/self/status field in MB) and ``report(base, loss, **extra)``,
which prints ``extra_mb`` = the peak RSS (``VmHWM``) minus ``base`` as JSON. VmHWM is this
process image's own peak: ``ru_maxrss`` would not do, since Linux carries it over exec from the
forked parent, so a large pytest process would inflate it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

_PRELUDE = '''
import json, sys, time
import torch
import contrastlab.losses as L

def status_mb(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no " + key)

def report(base, loss, **extra):
    peak = status_mb("VmHWM")
    print(json.dumps({"extra_mb": peak - base, "loss": loss.item(), **extra}))
'''


def measure(body: str, *args: str, timeout: float = 300.0) -> dict[str, Any]:
    """Run ``body`` (dedented) after the prelude with ``sys.argv[1:] = args``; its report."""
    proc = subprocess.run(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(body), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
