"""Events/s and delivery latency of etcd's Watch at 1, 100 and 1,000
watchers of one prefix under 1,000 writes/s, dkv and etcd side by side.

    python benchmarks/watch_fanout.py
    python benchmarks/watch_fanout.py --watchers 10,100 --duration 3 --target follower

The entry point of ``etcdbench.fanout`` beside this file (``--help`` tells
everything). It measures the ``dkv`` of this checkout.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # etcdbench, then this checkout's dkv

from etcdbench.fanout import main  # noqa: E402 - after the path is set

if __name__ == "__main__":
    sys.exit(main())
