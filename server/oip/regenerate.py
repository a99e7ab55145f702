"""Regenerate the committed gRPC modules from ``grpc_predict_v2.proto``.

    .venv/bin/python -m server.oip.regenerate

Needs ``grpcio-tools`` (a dev extra, the same version as ``grpcio``). Writes
``grpc_predict_v2_pb2.py``, ``grpc_predict_v2_pb2.pyi`` and ``grpc_predict_v2_pb2_grpc.py`` beside
the .proto, with one change to protoc's output: the messages are built in a descriptor pool of
their own, not protobuf's default pool. The protocol's messages are ``inference.*``, the same
full names as in Triton's ``grpc_service.proto``, which ``tritonclient.grpc`` registers in the
default pool; a process importing both (the tests, a load generator) would otherwise fail with
``duplicate symbol 'inference.ServerLiveRequest'``. Messages of either pool serialize to the same
bytes, so they interoperate on the wire.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PROTO = HERE / "grpc_predict_v2.proto"
STEM = "grpc_predict_v2"

_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_OWN_POOL = (
    "# A pool of its own: tritonclient registers the same inference.* names in the default one\n"
    "# (server/oip/regenerate.py).\n"
    "_POOL = _descriptor_pool.DescriptorPool()\n"
    "DESCRIPTOR = _POOL.AddSerializedFile("
)


def regenerate(dest: Path = HERE) -> list[Path]:
    """Run protoc (grpcio-tools) on the .proto; the files written (to ``dest``)."""
    from grpc_tools import protoc  # a dev dependency: imported only here

    include = str(Path(protoc.__file__).resolve().parent / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{ROOT}",
                f"-I{include}",
                f"--python_out={out}",
                f"--pyi_out={out}",
                f"--grpc_python_out={out}",
                str(PROTO.relative_to(ROOT)),
            ]
        )
        if code != 0:
            raise SystemExit(f"protoc failed with exit code {code}")
        generated = out / PROTO.parent.relative_to(ROOT)
        pb2 = generated / f"{STEM}_pb2.py"
        text = pb2.read_text()
        if text.count(_DEFAULT_POOL) != 1:
            raise SystemExit(f"protoc's output changed: no single {_DEFAULT_POOL!r} in {pb2}")
        pb2.write_text(text.replace(_DEFAULT_POOL, _OWN_POOL))
        written = []
        for name in (f"{STEM}_pb2.py", f"{STEM}_pb2.pyi", f"{STEM}_pb2_grpc.py"):
            shutil.copyfile(generated / name, dest / name)
            written.append(dest / name)
    return written


def main() -> int:
    for path in regenerate():
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
