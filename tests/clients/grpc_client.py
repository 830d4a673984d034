# grpcio client of egret.test.Echo (unary, stream, error); argv: CA file, target host:port.
import grpc, sys
ca, target = sys.argv[1], sys.argv[2]
# custom metadata only (a trailers-only error response also carries e.g. date)
md = lambda m: sorted((k, v) for k, v in m if k.startswith("x-"))
ch = grpc.secure_channel(target, grpc.ssl_channel_credentials(open(ca, "rb").read()))
r, call = ch.unary_unary("/egret.test.Echo/Unary").with_call(
    b"hello", timeout=10, metadata=(("x-client-md", "c1"),))
print("UNARY", r.decode())
print("UNARY-CODE", call.code().name)
print("UNARY-TRAILERS", md(call.trailing_metadata()))
it = ch.unary_stream("/egret.test.Echo/Stream")(b"5", timeout=10)
print("STREAM", [m.decode() for m in it])
print("STREAM-CODE", it.code().name)
print("STREAM-TRAILERS", md(it.trailing_metadata()))
try:
    ch.unary_unary("/egret.test.Echo/Error")(b"x", timeout=10)
    print("ERROR-NOT-RAISED")
except grpc.RpcError as e:
    print("ERROR-CODE", e.code().name)
    print("ERROR-DETAILS", e.details())
    print("ERROR-TRAILERS", md(e.trailing_metadata()))
