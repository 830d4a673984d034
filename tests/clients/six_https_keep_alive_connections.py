# Six HTTPS connections to vcs.test (CA file argv[1]), 3 GETs each; prints the sha256 of the
# x-auth-token each request carried upstream, as JSON.
import http.client, json, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
conns = [http.client.HTTPSConnection("vcs.test", 443, context=ctx) for _ in range(6)]
for c in conns:
    c.connect()
tokens = []
for _ in range(3):
    for c in conns:
        c.request("GET", "/echo")
        r = c.getresponse()
        tokens.append(json.loads(r.read())["headers_sha256"].get("x-auth-token"))
print(json.dumps(tokens))
