# test-case-name: tests.test_faults
"""``python -m dkv.torture``: the fault runs of ``dkv.testing.torture``."""

import sys

from dkv.testing.torture import main

if __name__ == "__main__":
    sys.exit(main())
