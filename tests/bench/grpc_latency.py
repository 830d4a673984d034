#!/usr/bin/env python3
"""gRPC unary latency with python grpcio on both sides (driven by egret-bench-proto).

  grpc_latency.py server CERT KEY READY_FILE ADDR:PORT...
      TLS gRPC server: egret.bench.Echo/Unary answers the request bytes with the value of the
      x-auth-token metadata prepended (so a run through egret proves the handler injected it).
  grpc_latency.py client CA TARGET SERVER_NAME CALLS
      One channel, 200 warm-up calls, then CALLS sequential unary calls; prints one JSON line:
      {"p50_us", "p99_us", "mean_us", "calls", "auth"}.
Messages are bytes (no protobuf): grpcio's identity serializers, so no protoc is needed.
"""
import json
import sys
import time


def server(cert, key, ready, *addrs):
    from concurrent import futures

    import grpc

    def unary(req, ctx):
        md = dict(ctx.invocation_metadata())
        return md.get("x-auth-token", "<absent>").encode() + b" " + req

    h = grpc.method_handlers_generic_handler(
        "egret.bench.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(unary)}
    )
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    s.add_generic_rpc_handlers((h,))
    creds = grpc.ssl_server_credentials([(open(key, "rb").read(), open(cert, "rb").read())])
    for a in addrs:
        s.add_secure_port(a, creds)
    s.start()
    with open(ready, "w") as f:
        f.write("ok")
    s.wait_for_termination()


def client(ca, target, server_name, calls):
    import grpc

    creds = grpc.ssl_channel_credentials(open(ca, "rb").read())
    opts = [("grpc.ssl_target_name_override", server_name), ("grpc.default_authority", server_name)]
    ch = grpc.secure_channel(target, creds, options=opts)
    unary = ch.unary_unary("/egret.bench.Echo/Unary")
    payload = b"x" * 64
    for _ in range(200):
        first = unary(payload, timeout=10)
    lat = []
    for _ in range(calls):
        t = time.perf_counter_ns()
        unary(payload, timeout=10)
        lat.append(time.perf_counter_ns() - t)
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] / 1000
    print(json.dumps({
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "mean_us": sum(lat) / len(lat) / 1000,
        "calls": calls,
        # the credential itself is a throw-away bench value; report only whether it arrived
        "auth": not first.startswith(b"<absent>"),
    }))


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "server":
        server(*args)
    elif mode == "client":
        client(args[0], args[1], args[2], int(args[3]))
    else:
        sys.exit("usage: grpc_latency.py server|client ...")
