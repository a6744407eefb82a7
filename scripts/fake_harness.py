"""A stand-in for Harness's API for `make demo`: it answers the one question the function asks,
the latest supported delegate version of an account, under a path (as app.harness.io/gratis
does), to the one API key it knows. The version is read from a file at every request, so the
demo publishes a new one by writing the file. (The tests have their own, in
tests/support/harness_api.rs, which also plays Harness's failures.)

Usage: python scripts/fake_harness.py PORT PATH ACCOUNT API_KEY VERSION_FILE
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

port, prefix, account, key, version_file = sys.argv[1:6]


class Harness(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlsplit(self.path)
        if url.path != f"{prefix}/ng/api/delegate-setup/latest-supported-version":
            return self.answer(404, {"code": "RESOURCE_NOT_FOUND"})
        if self.headers.get("x-api-key") != key:
            return self.answer(401, {"code": "INVALID_TOKEN", "message": "Token is not valid."})
        if parse_qs(url.query).get("accountIdentifier") != [account]:
            return self.answer(403, {"code": "ACCESS_DENIED"})
        version = open(version_file).read().strip()
        self.answer(200, {"metaData": {}, "resource": {
            "latestSupportedVersion": version,
            "latestSupportedMinimalVersion": version + ".minimal"}, "responseMessages": []})

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(port)), Harness).serve_forever()
