"""The io fuzz suite (tests/test_fuzz_io.py) with many more inputs: `python benchmarks/fuzz.py [PER_KIND]`.

CI runs 3,000 inputs per input kind (15k in all); this runs PER_KIND (default 50,000) per kind, same
strategies, same assertions, deterministic, and prints the inputs tried and the time taken.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    per_kind = sys.argv[1] if len(sys.argv) > 1 else "50000"
    env = {**os.environ, "FUZZ_EXAMPLES": per_kind, "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(ROOT / "tests" / "test_fuzz_io.py")], env=env, cwd=ROOT)
    print(f"fuzz: {per_kind} inputs per kind x 5 kinds in {time.perf_counter() - start:.0f} s (rc {rc})")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
