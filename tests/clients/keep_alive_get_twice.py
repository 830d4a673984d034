# GET github.test/echo, wait for a stdin line, GET again on that connection; prints both. No args.
import http.client, sys, subprocess
c = http.client.HTTPConnection("github.test", 80)
c.request("GET", "/echo"); r = c.getresponse(); r.read(); print("before", r.status)
sys.stdout.flush()
input()
c.request("GET", "/echo"); r = c.getresponse(); r.read(); print("after", r.status)
