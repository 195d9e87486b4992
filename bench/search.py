"""Search benchmarks. Default: the scale curve (bench/search_scale.py: flat vs hash vs funnel vs IVF
at 100k, 1M, 10M codes; bounded, under 10 min once the base codes are cached). `--sweep`: the
1M-code method sweep (bench/search_sweep.py) whose `reports/benchmarks/search.json` the
report's code-length chooser reads.

    python bench/search.py                     # scale curve -> reports/benchmarks.md, search-scale.json/.png
    python bench/search.py --sizes 100000      # one size
    python bench/search.py --sweep             # the 1M method sweep
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--sweep" in argv:
        argv.remove("--sweep")
        import search_sweep

        return search_sweep.main(argv)
    import search_scale

    return search_scale.main(argv)


if __name__ == "__main__":
    sys.exit(main())
