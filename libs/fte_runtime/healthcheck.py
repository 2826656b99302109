"""A container health probe: `python -m fte_runtime.healthcheck --port N`.

Asks the gRPC health service (or, with `--http PATH`, an HTTP endpoint) on this host and exits 0
when it answers SERVING (HTTP 2xx), 1 otherwise. Images use it for their HEALTHCHECK, so it needs
nothing beyond the runtime's own dependencies and no console script.
"""

from __future__ import annotations

import argparse
import http.client
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check_grpc(host: str, port: int, service: str, timeout: float) -> tuple[bool, str]:
    try:
        with grpc.insecure_channel(f"{host}:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError as err:
        # A sync channel raises a `grpc.Call` as well; its code names what went wrong.
        code: grpc.StatusCode | None = getattr(err, "code", lambda: None)()
        return False, f"health check failed: {code.name if code else err}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, status


def check_http(host: str, port: int, path: str, timeout: float) -> tuple[bool, str]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        status = conn.getresponse().status
    except OSError as err:
        return False, f"health check failed: {err}"
    finally:
        conn.close()
    return 200 <= status < 300, f"HTTP {status}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fte_runtime.healthcheck", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--service", default="", help="gRPC service name to ask about ('' = the whole server)")
    parser.add_argument("--http", metavar="PATH", help="probe this HTTP path instead of gRPC health")
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    if args.http:
        ok, detail = check_http(args.host, args.port, args.http, args.timeout)
    else:
        ok, detail = check_grpc(args.host, args.port, args.service, args.timeout)
    print(detail, file=sys.stderr if not ok else sys.stdout)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
