# test-case-name: tests.test_vs_etcd_script
"""What one write costs a 3-node dkv cluster: µs of CPU and bytes on disk.

    python benchmarks/write_cost.py                # 5,000 writes through POST /v0/kv
    python benchmarks/write_cost.py --api v3       # through POST /v3/kv/put

The entry point of ``etcdbench.cost`` beside this file (``--help`` tells
everything). It measures the ``dkv`` of this checkout.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # etcdbench, then this checkout's dkv

from etcdbench.cost import main  # noqa: E402 - after the path is set

if __name__ == "__main__":
    sys.exit(main())
