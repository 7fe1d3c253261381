"""dkv against etcd on the same machine, with the same load generator.

    python benchmarks/vs_etcd.py                  # the target runs, 3 rounds, the TARGET TABLE
    python benchmarks/vs_etcd.py --runs all --duration 10 --rounds 2

The entry point of the ``etcdbench`` package beside this file (``--help``
tells everything). It measures the ``dkv`` of this checkout.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # etcdbench, then this checkout's dkv

from etcdbench.cli import main  # noqa: E402 - after the path is set

if __name__ == "__main__":
    sys.exit(main())
