"""``python -m etcdbench`` (from ``benchmarks/``): the same as ``benchmarks/vs_etcd.py``."""

import sys

from etcdbench.cli import main

sys.exit(main())
