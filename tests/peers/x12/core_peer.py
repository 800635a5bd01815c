"""A payer's CAQH CORE real-time endpoint for the tests: spyne answering the SOAP 1.2
COREEnvelopeRealTimeRequest. Every 270 is checked by linuxforhealth-x12 (x12_peer.check270)
and reported on stderr as `270 ok <member_id>` or `270 refused <error>`; the answer depends on
the member id's first word (before '-'):

  ACTIVE, INACTIVE, BADID (AAA 72), DOWN (AAA 42: the payer cannot answer now) -> a 271
  DOWNONCE   AAA 42 the first time, then active
  SLOW       waits 30 s before answering active (past the gateway's timeout)
  WAIT200    waits 200 ms before answering active (benches/eligibility.rs: a payer's pace)
  GARBAGE    a payload that is not X12
  LIAR       an active 271 for another trace
  anything else -> active

A wrong WS-Security password is answered with ErrorCode Unauthorized. The rule's HTTP MIME
multipart form (a multipart/form-data POST, answered in kind) gets the same answers.
Usage: core_peer.py PORT PASSWORD"""

import sys
import threading
import time
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIServer, WSGIRequestHandler, make_server

from spyne import Application, ComplexModel, ServiceBase, Unicode, rpc
from spyne.protocol.soap import Soap12
from spyne.server.wsgi import WsgiApplication

import x12_peer

NS = "http://www.caqh.org/SOAP/WSDL/CORERule2.2.0.xsd"
WSSE = "{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd}"
# The rule's children are unqualified, as clearinghouses send them.
U = Unicode(sub_ns="")
FIELDS = ["PayloadType", "ProcessingMode", "PayloadID", "TimeStamp", "SenderID", "ReceiverID",
          "CORERuleVersion", "Payload"]
PASSWORD = sys.argv[2]
seen = {}


class COREEnvelopeRealTimeRequest(ComplexModel):
    __namespace__ = NS
    _type_info = [(f, U) for f in FIELDS]


class COREEnvelopeRealTimeResponse(ComplexModel):
    __namespace__ = NS
    _type_info = [(f, U) for f in FIELDS + ["ErrorCode", "ErrorMessage"]]


said = threading.Lock()


def say(*words):
    # One write per line under a lock: requests are answered on threads of their own.
    with said:
        sys.stderr.write(" ".join(words) + "\n")
        sys.stderr.flush()


def answer(req, payload="", code="Success", message="None"):
    return COREEnvelopeRealTimeResponse(
        PayloadType="X12_271_Response_005010X279A1", ProcessingMode="RealTime",
        PayloadID=req.PayloadID, TimeStamp="2026-12-02T09:15:00Z", SenderID=req.ReceiverID,
        ReceiverID=req.SenderID, CORERuleVersion="2.2.0", Payload=payload, ErrorCode=code,
        ErrorMessage=message)


def respond(password, payload):
    """The Payload, ErrorCode and ErrorMessage answering one request."""
    if password != PASSWORD:
        say("auth refused")
        return "", "Unauthorized", "UsernameToken refused"
    try:
        asked = x12_peer.check270(payload)
    except Exception as error:  # the parser's validation errors, whatever their type
        say("270 refused", str(error).replace("\n", " "))
        return "", "PayloadTypeIncorrect", "not a valid 270"
    member, trace = asked["member_id"], asked["trace"]
    say("270 ok", member)
    scenario = member.split("-")[0]
    seen[member] = seen.get(member, 0) + 1
    if scenario == "SLOW":
        time.sleep(30)
    if scenario == "WAIT200":
        time.sleep(0.2)
    if scenario == "GARBAGE":
        return "this is not X12", "Success", "None"
    if scenario == "LIAR":
        return x12_peer.emit271("active", "SOMEONE-ELSE"), "Success", "None"
    name = {"INACTIVE": "inactive", "BADID": "member_id", "DOWN": "payer_down"}.get(scenario, "active")
    if scenario == "DOWNONCE":
        name = "payer_down" if seen[member] == 1 else "active"
    return x12_peer.emit271(name, trace), "Success", "None"


class Core(ServiceBase):
    @rpc(COREEnvelopeRealTimeRequest, _returns=COREEnvelopeRealTimeResponse, _body_style="bare",
         _in_message_name="COREEnvelopeRealTimeRequest",
         _out_message_name="COREEnvelopeRealTimeResponse",
         _operation_name="RealTimeTransaction")
    def RealTimeTransaction(ctx, req):
        password = ctx.in_document.find(f".//{WSSE}Password")
        payload, code, message = respond(None if password is None else password.text, req.Payload)
        return answer(req, payload, code, message)


def multipart(environ, start_response):
    """The MIME multipart form: the same fields as form-data parts."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    head = f"Content-Type: {environ['CONTENT_TYPE']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + environ["wsgi.input"].read(length))
    fields = {part.get_param("name", header="content-disposition"): part.get_content().strip()
              for part in message.iter_parts()}
    payload, code, text = respond(fields.get("Password"), fields.get("Payload", ""))
    out = {"PayloadType": "X12_271_Response_005010X279A1", "ProcessingMode": "RealTime",
           "PayloadID": fields.get("PayloadID", ""), "TimeStamp": "2026-12-02T09:15:00Z",
           "SenderID": fields.get("ReceiverID", ""), "ReceiverID": fields.get("SenderID", ""),
           "CORERuleVersion": "2.2.0", "Payload": payload, "ErrorCode": code, "ErrorMessage": text}
    boundary = uuid.uuid4().hex
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                   for k, v in out.items()) + f"--{boundary}--\r\n"
    start_response("200 OK", [("Content-Type", f"multipart/form-data; boundary={boundary}")])
    return [body.encode()]


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


app = Application([Core], tns=NS, in_protocol=Soap12(validator="soft"), out_protocol=Soap12())
soap = WsgiApplication(app)


def route(environ, start_response):
    if environ.get("CONTENT_TYPE", "").startswith("multipart/form-data"):
        return multipart(environ, start_response)
    return soap(environ, start_response)


server = make_server("127.0.0.1", int(sys.argv[1]), route, server_class=Server,
                     handler_class=Quiet)
say("ready")
server.serve_forever()
