"""Lease grants/s and keep-alives/s (10,000 leases over a few LeaseKeepAlive
streams) with their latency, dkv and etcd side by side.

    python benchmarks/lease_keepalive.py
    python benchmarks/lease_keepalive.py --leases 1000 --duration 3 --target follower

The entry point of ``etcdbench.keepalive`` beside this file (``--help`` tells
everything). It measures the ``dkv`` of this checkout.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # etcdbench, then this checkout's dkv

from etcdbench.keepalive import main  # noqa: E402 - after the path is set

if __name__ == "__main__":
    sys.exit(main())
