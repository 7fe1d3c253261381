# test-case-name: tests.test_faults,tests.test_soak
"""``python -m dkv.torture``: the fault runs of ``dkv.testing.torture``;
with ``--soak DURATION``, the soak of ``dkv.testing.soak``."""

import sys


def main(argv: list[str]) -> int:
    if any(a == "--soak" or a.startswith("--soak=") for a in argv):
        from dkv.testing.soak import main as soak

        return soak(argv)
    from dkv.testing.torture import main as torture

    return torture(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
