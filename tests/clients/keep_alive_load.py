# GET github.test/echo on one keep-alive connection for argv[1] seconds; prints a JSON summary.
import http.client, time, json, sys
c = http.client.HTTPConnection("github.test", 80)
end = time.time() + float(sys.argv[1]); n = 0; bad = 0; seen = {}
while time.time() < end:
    c.request("GET", "/echo"); r = c.getresponse(); body = r.read(); n += 1
    if r.status != 200: bad += 1; print("BAD", r.status, body[:200]); continue
    h = json.loads(body)["headers"].get("x-egret-handler", "?")
    seen[h] = seen.get(h, 0) + 1
print(json.dumps({"n": n, "bad": bad, "seen": seen}))
