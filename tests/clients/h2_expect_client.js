// Node http2 POST; argv: CA file, URL, size, expect|plain; prints status, bytes sent, body.
const http2 = require('http2'), fs = require('fs');
const [ca, url, size, mode] = process.argv.slice(2);
const u = new URL(url);
const s = http2.connect(u.origin, { ca: fs.readFileSync(ca) });
const t0 = Date.now();
const h = { ':method': 'POST', ':path': u.pathname, 'content-length': size };
if (mode === 'expect') h['expect'] = '100-continue';
const req = s.request(h, { endStream: false });
let sent = 0, body = '';
const chunk = Buffer.alloc(65536, 120);
function pump() {
  while (sent < +size) { sent += chunk.length; if (!req.write(chunk)) { req.once('drain', pump); return; } }
  req.end();
}
if (mode === 'expect') req.on('continue', pump); else pump();
req.on('response', (hd) => { console.log('STATUS', hd[':status'], 'SENT_AT_RESPONSE', sent, 'MS', Date.now() - t0); });
req.on('data', (d) => body += d);
req.on('end', () => { console.log('BODY', JSON.stringify(body)); s.close(); });
req.on('error', (e) => { console.log('ERROR', e.code, e.message, 'BODY', JSON.stringify(body)); s.close(); process.exitCode = 1; });
