"""A minimal receiver of uploads for ci/test-php.sh (OTLP/HTTP, and Datadog agent uploads):
answers every POST with 200 and an empty body (an empty ExportProfilesServiceResponse for
OTLP), and keeps each request's body as DIR/N.body, its headers as DIR/N.headers and its path
as DIR/N.path (the path file is written last, so a test that sees it sees the rest).
Writes the port it listens on (127.0.0.1, chosen by the kernel) to DIR/port.

Usage: otlp_receiver.py DIR
"""

import http.server
import os
import sys

out = sys.argv[1]
count = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global count
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        count += 1
        with open(os.path.join(out, f"{count}.body"), "wb") as f:
            f.write(body)
        with open(os.path.join(out, f"{count}.headers"), "w") as f:
            f.write(str(self.headers))
        tmp = os.path.join(out, f"{count}.path.tmp")
        with open(tmp, "w") as f:
            f.write(self.path)
        os.rename(tmp, os.path.join(out, f"{count}.path"))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


os.makedirs(out, exist_ok=True)
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
tmp = os.path.join(out, "port.tmp")
with open(tmp, "w") as f:
    f.write(str(server.server_address[1]))
os.rename(tmp, os.path.join(out, "port"))
server.serve_forever()
