#!/usr/bin/env python3
"""A Twilio-style voice call API for the messaging tests (standard library only), on 127.0.0.1.

    voice_api.py PORT ACCOUNT:TOKEN

`POST /2010-04-01/Accounts/<ACCOUNT>/Calls.json` with HTTP basic authentication as
ACCOUNT:TOKEN and a form holding `To`, `From`, what the call says (`Text`, `Twiml` or a prompt
`Url`) and `StatusCallback` is answered `201` with `{"sid": "CA...", "status": "queued"}`, as
Twilio's Calls API answers. The call then "rings" and ends: the status callback is POSTed a
form with `CallSid`, `CallStatus` `ringing`, then the final status (`completed`, or what the
test set) with its `CallDuration` (75 s answered, else 0) — the call's receipt. A call without `To`, `From` and
something to say is answered 400; a wrong login 401.

Scripted by the test through stdin, one command a line, each answered `ok <command>`:

    status completed|busy|no-answer|failed    how the next calls end

Logs on stderr: `ready`, `call <sid> <To> <what it says as JSON>`, `callback <sid> <status>
<HTTP status of the gateway's answer>`, `refused <why>`. Stops on SIGTERM.
"""

import base64
import json
import signal
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port = int(sys.argv[1])
account, token = sys.argv[2].split(":", 1)
state = {"status": "completed", "next": 1}
lock = threading.Lock()


def log(line):
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def call_back(url, sid, status):
    """POSTs the call's states to its status callback, as the call rings and ends."""
    for step in ["ringing", status]:
        fields = {"CallSid": sid, "CallStatus": step, "AccountSid": account}
        if step != "ringing":
            # Twilio gives a final state's length in seconds: 0 when no one answered.
            fields["CallDuration"] = "75" if step == "completed" else "0"
        body = urllib.parse.urlencode(fields).encode()
        request = urllib.request.Request(url, data=body, method="POST")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                code = answer.status
        except urllib.error.HTTPError as e:
            code = e.code
        except OSError as e:
            code = f"unreachable:{e}"
        log(f"callback {sid} {step} {code}")


class Calls(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        want = "Basic " + base64.b64encode(f"{account}:{token}".encode()).decode()
        if self.headers.get("Authorization") != want:
            log("refused login")
            return self.answer(401, {"code": 20003, "message": "Authenticate"})
        if self.path != f"/2010-04-01/Accounts/{account}/Calls.json":
            log("refused path")
            return self.answer(404, {"code": 20404, "message": "not found"})
        get = lambda k: (form.get(k) or [""])[0]
        says = get("Text") or get("Twiml") or get("Url")
        if not (get("To") and get("From") and says):
            log("refused fields")
            return self.answer(400, {"code": 21201, "message": "To, From and Url are required"})
        with lock:
            sid = "CA%032d" % state["next"]
            state["next"] += 1
            status = state["status"]
        log(f"call {sid} {get('To')} {json.dumps(says)}")
        self.answer(201, {"sid": sid, "status": "queued"})
        callback = get("StatusCallback")
        if callback:
            threading.Thread(target=call_back, args=(callback, sid, status), daemon=True).start()


def commands():
    for line in sys.stdin:
        words = line.split()
        if len(words) == 2 and words[0] == "status":
            with lock:
                state["status"] = words[1]
        log(f"ok {line.strip()}")


server = ThreadingHTTPServer(("127.0.0.1", port), Calls)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
threading.Thread(target=commands, daemon=True).start()
log("ready")
server.serve_forever()
