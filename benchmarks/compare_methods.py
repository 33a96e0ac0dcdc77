"""CAM and the CAM method family compared on the scenes benchmark (3 seeds); see scarce.methods.compare.

    nice python benchmarks/compare_methods.py configs/methods/*.yaml --out runs/compare --seeds 0 1 2

The same as ``scarce compare ...``. Writes OUT/table.md (the table for docs/benchmarks.md), OUT/results.json
and OUT/report.html.
"""

from __future__ import annotations

import sys

from scarce.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
