"""The gRPC load generator of ``tabserve bench``: unary calls, closed loop, in a process of its own.

    python -m loadtests.bench.grpc_load PORT CONC SECONDS METHOD REQUESTS_FILE OUT_FILE

``CONC`` calls in flight at all times on one channel (one HTTP/2 connection, as a gRPC client
uses), the serialized requests of ``REQUESTS_FILE`` (each a 4-byte little-endian length, then the
bytes) sent in rotation to ``METHOD`` (``/inference.GRPCInferenceService/ModelInfer``; the
empty ServerLive call is the floor of the gRPC path, as the empty HTTP handlers are REST's).
Requests are serialized before the clock starts and responses are not deserialized (a call
counts as an error unless its status is OK), so the client's CPU goes to gRPC itself. It runs on
grpcio's asyncio client with uvloop and writes the same summary JSON as the HTTP load generator
(requests, seconds, errors, p50_ms, p99_ms). :class:`GrpcLoad` runs it, pinned, for
``loadtests.bench.serving`` with the interface of its ``LoadGen``.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from loadtests.bench.summary import run_and_summarize
from server.oip import grpc_predict_v2_pb2 as pb

INFER = "/inference.GRPCInferenceService/ModelInfer"
FLOOR = "/inference.GRPCInferenceService/ServerLive"
_LENGTH = struct.Struct("<I")


def one_row_requests(model: str, input_name: str, rows: np.ndarray) -> list[bytes]:
    """One serialized ModelInferRequest per row, as ``tritonclient.grpc`` sends it (raw FP32
    contents, shape [1, n_features])."""
    out = []
    for row in np.ascontiguousarray(rows, dtype="<f4"):
        tensor = pb.ModelInferRequest.InferInputTensor(
            name=input_name, datatype="FP32", shape=[1, len(row)]
        )
        request = pb.ModelInferRequest(
            model_name=model, inputs=[tensor], raw_input_contents=[row.tobytes()]
        )
        out.append(request.SerializeToString())
    return out


FLOOR_REQUESTS = [pb.ServerLiveRequest().SerializeToString()]


def write_requests(path: Path, requests: list[bytes]) -> None:
    path.write_bytes(b"".join(_LENGTH.pack(len(r)) + r for r in requests))


def read_requests(path: Path) -> list[bytes]:
    data, out, pos = path.read_bytes(), [], 0
    while pos < len(data):
        (n,) = _LENGTH.unpack_from(data, pos)
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


async def run_load(
    port: int, method: str, requests: list[bytes], concurrency: int, seconds: float
) -> dict[str, Any]:
    latencies: list[int] = []
    errors = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(method)  # bytes in, bytes out: no (de)serialization
        await asyncio.wait_for(channel.channel_ready(), 10)  # connected before the clock

        async def worker(offset: int, until: float) -> None:
            nonlocal errors
            i, n = offset, len(requests)
            while True:
                sent = time.perf_counter_ns()
                try:
                    await call(requests[i % n], timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                now = time.perf_counter_ns()
                latencies.append(now - sent)
                i += 1
                if now / 1e9 >= until:
                    return

        until = time.perf_counter() + seconds
        start = time.perf_counter()
        # Workers start spread over the rotation, so they do not send the same rows in lockstep.
        await asyncio.gather(
            *(worker(k * len(requests) // concurrency, until) for k in range(concurrency))
        )
        elapsed = time.perf_counter() - start
    return {"latencies_ns": latencies, "seconds": elapsed, "errors": errors}


def main(argv: list[str]) -> int:
    port, conc, secs, method, requests_file, out_file = argv
    load = run_load(int(port), method, read_requests(Path(requests_file)), int(conc), float(secs))
    return run_and_summarize(load, out_file)


class GrpcLoad:
    """``LoadGen.run``'s interface over this module: ``path`` is the gRPC method, ``bodies`` the
    serialized requests, and the port is the server's gRPC port given here (the HTTP port the
    caller passes is ignored)."""

    def __init__(self, grpc_port: int, cpu: int | None, workdir: Path) -> None:
        self.grpc_port, self.cpu, self.workdir = grpc_port, cpu, workdir

    def run(
        self, port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float
    ) -> dict[str, Any]:
        requests_file, out = self.workdir / "grpc-requests.bin", self.workdir / "grpc-result.json"
        write_requests(requests_file, bodies)
        cmd = [sys.executable, "-m", "loadtests.bench.grpc_load", str(self.grpc_port)]
        cmd += [str(concurrency), str(seconds), path, str(requests_file), str(out)]
        cpu = self.cpu
        before = os.times()
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
        )
        try:
            _, stderr = proc.communicate(timeout=seconds + 60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        after = os.times()
        if proc.returncode != 0:
            raise RuntimeError(f"gRPC load generator failed: {stderr.decode()[-500:]}")
        result: dict[str, Any] = json.loads(out.read_text())
        result["cpu_seconds"] = (after.children_user + after.children_system) - (
            before.children_user + before.children_system
        )
        return result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
