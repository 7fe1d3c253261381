"""Regenerate the Python modules in dkv/pb/ from the .proto files in proto/.

Run from anywhere: ``python tools/gen_proto.py``. It needs grpcio-tools (in the
``test`` extra). ``tests/test_proto_fresh.py`` fails when the committed modules
no longer match the .proto files.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
#: Where the generated modules land, and the Python package they belong to.
PACKAGE = "dkv/pb"


def generate(out_dir: Path) -> list[Path]:
    """Compile every proto/*.proto into out_dir/dkv/pb/; return the files written."""
    from grpc_tools import protoc

    protos = sorted(PROTO_DIR.glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"--proto_path={PACKAGE}={PROTO_DIR}",
        f"--proto_path={include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p) for p in protos),
    ]
    (out_dir / PACKAGE).mkdir(parents=True, exist_ok=True)
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_dir / PACKAGE).glob("*_pb2*.py*"))


def main() -> None:
    for path in generate(ROOT):
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    sys.exit(main())
