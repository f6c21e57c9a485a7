"""What a benchmark records about the machine it ran on (imported by the scripts beside it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe() -> str:
    """``x86_64, <CPU model>, 2 CPUs, Python 3.11.7``."""
    return f"{platform.machine()}, {cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
