# grpcio server of egret.test.Echo; argv: cert, key, port, ready file (written once serving).
import grpc, hashlib, sys
from concurrent import futures
cert, key, port, ready = sys.argv[1:5]
def unary(req, ctx):
    md = dict(ctx.invocation_metadata())
    ctx.set_trailing_metadata((("x-seen-client-md", md.get("x-client-md", "<absent>")),))
    auth = md.get("x-auth-token", "<absent>").encode()
    # the value itself (which egret's echo guard masks on the way back) and its digest
    return b"auth=" + auth + b" sha=" + hashlib.sha256(auth).hexdigest().encode() + b" echo=" + req
def stream(req, ctx):
    n = int(req)
    for i in range(n):
        yield b"item %d" % i
    ctx.set_trailing_metadata((("x-trailer-count", str(n)), ("x-blob-bin", b"\x00\x01\xfe\xff")))
def error(req, ctx):
    ctx.set_trailing_metadata((("x-error-detail", "widget-42"),))
    ctx.abort(grpc.StatusCode.NOT_FOUND, "widget 42 does not exist")
h = grpc.method_handlers_generic_handler("egret.test.Echo", {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "Stream": grpc.unary_stream_rpc_method_handler(stream),
    "Error": grpc.unary_unary_rpc_method_handler(error),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((h,))
creds = grpc.ssl_server_credentials([(open(key, "rb").read(), open(cert, "rb").read())])
server.add_secure_port("[::]:%s" % port, creds)
server.start()
open(ready, "w").write("ok")
server.wait_for_termination()
