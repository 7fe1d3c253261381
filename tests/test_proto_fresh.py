"""The committed modules in dkv/pb/ must match proto/*.proto.

Compares meaning, not text: the serialized file descriptors of the committed
*_pb2 modules against freshly compiled ones, and the RPC method paths of the
*_pb2_grpc modules, so a different grpcio-tools version does not count as stale.
Regenerate with ``python tools/gen_proto.py``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import gen_proto  # noqa: E402

PROTOS = sorted(p.stem for p in (ROOT / "proto").glob("*.proto"))


def _descriptor(path: Path, name: str) -> bytes:

    # Load the module into a private pool so fresh and committed do not clash.
    source = path.read_text().replace(
        "_descriptor_pool.Default()", "_descriptor_pool.DescriptorPool()"
    )
    source = re.sub(r"from dkv\.pb import \w+ as \w+\n", "", source)
    namespace: dict[str, object] = {"__name__": name}
    exec(compile(source, str(path), "exec"), namespace)  # noqa: S102 - our own generated code
    return namespace["DESCRIPTOR"].serialized_pb  # type: ignore[attr-defined]


def _methods(path: Path) -> list[str]:
    return sorted(set(re.findall(r"'(/dkv\.[\w.]+/\w+)'", path.read_text())))


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pb")
    gen_proto.generate(out)
    return out / "dkv" / "pb"


@pytest.mark.parametrize("stem", PROTOS)
def test_messages_match_proto(fresh: Path, stem: str) -> None:
    committed = ROOT / "dkv" / "pb" / f"{stem}_pb2.py"
    assert committed.exists(), f"{committed} missing: run python tools/gen_proto.py"
    assert _descriptor(committed, "committed") == _descriptor(fresh / f"{stem}_pb2.py", "fresh"), (
        f"dkv/pb/{stem}_pb2.py is stale: run python tools/gen_proto.py"
    )


@pytest.mark.parametrize("stem", PROTOS)
def test_services_match_proto(fresh: Path, stem: str) -> None:
    committed = ROOT / "dkv" / "pb" / f"{stem}_pb2_grpc.py"
    assert _methods(committed) == _methods(fresh / f"{stem}_pb2_grpc.py"), (
        f"dkv/pb/{stem}_pb2_grpc.py is stale: run python tools/gen_proto.py"
    )


def test_every_proto_has_modules() -> None:
    generated = {p.name for p in (ROOT / "dkv" / "pb").glob("*_pb2*.py")}
    for stem in PROTOS:
        assert {f"{stem}_pb2.py", f"{stem}_pb2_grpc.py"} <= generated

