"""Benchmarks, run by hand: `python -m bench.<name>`. See bench/README.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def save_result(name: str, result: Any) -> Path:
    """Write a benchmark's figures to bench/results/<name>.json (not committed)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path
