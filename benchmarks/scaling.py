"""How dkv's and etcd's costs grow: cluster size, value size, key count,
connections, a paused follower's catch-up.

    python benchmarks/scaling.py --quick
    python benchmarks/scaling.py --sections size,value,keys,conns,catchup

The entry point of ``etcdbench.scaling_cli`` beside this file (``--help``
tells everything). It measures the ``dkv`` of this checkout.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # etcdbench, then this checkout's dkv

from etcdbench.scaling_cli import main  # noqa: E402 - after the path is set

if __name__ == "__main__":
    sys.exit(main())
