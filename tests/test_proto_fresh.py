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


def _descriptor(path: Path) -> bytes:
    """The serialized file descriptor a generated *_pb2 module registers,
    loaded into a private pool (so fresh and committed do not clash) after
    the modules it imports from the same folder (etcd_rpc imports etcd_kv)."""
    from google.protobuf import descriptor_pool

    return _load(path, descriptor_pool.DescriptorPool(), set())


def _load(path: Path, pool: object, loaded: set[str]) -> bytes:
    source = path.read_text()
    for dependency in re.findall(r"^from dkv\.pb import (\w+) as \w+$", source, re.MULTILINE):
        if dependency not in loaded:
            loaded.add(dependency)
            _load(path.parent / f"{dependency}.py", pool, loaded)
    source = source.replace("_descriptor_pool.Default()", "__pool__")
    source = re.sub(r"from dkv\.pb import \w+ as \w+\n", "", source)
    namespace: dict[str, object] = {"__name__": f"private_{path.stem}", "__pool__": pool}
    exec(compile(source, str(path), "exec"), namespace)  # noqa: S102 - our own generated code
    return namespace["DESCRIPTOR"].serialized_pb  # type: ignore[attr-defined]


def _methods(path: Path) -> list[str]:
    """The gRPC method paths ('/package.Service/Method') a *_pb2_grpc module names."""
    return sorted(set(re.findall(r"'(/[\w.]+/\w+)'", path.read_text())))


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pb")
    gen_proto.generate(out)
    return out / "dkv" / "pb"


@pytest.mark.parametrize("stem", PROTOS)
def test_messages_match_proto(fresh: Path, stem: str) -> None:
    committed = ROOT / "dkv" / "pb" / f"{stem}_pb2.py"
    assert committed.exists(), f"{committed} missing: run python tools/gen_proto.py"
    assert _descriptor(committed) == _descriptor(fresh / f"{stem}_pb2.py"), (
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

