"""Sends HL7 messages over MLLP in TLS with the `hl7` package's MLLP client, its socket
wrapped by Python's `ssl`, as an ATNA secure node would.

Usage: mllp_tls_send.py PORT CA_FILE MESSAGE_FILE [CERT_FILE KEY_FILE]

Messages in MESSAGE_FILE are separated by blank lines. For each message one line is printed:
`ACK <the ACK, segments joined by |\\r replaced with \\n>` or `NONE <why>` when the gateway
closed the connection or the TLS handshake failed; after a `NONE` nothing more is sent.
"""

import ssl
import sys

import hl7.client


def main():
    port, ca_file, message_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    if len(sys.argv) > 5:
        context.load_cert_chain(sys.argv[4], sys.argv[5])
    with open(message_file, encoding="utf-8") as f:
        messages = [m.strip().replace("\n", "\r") for m in f.read().split("\n\n") if m.strip()]
    try:
        client = hl7.client.MLLPClient("127.0.0.1", port)
        client.socket = context.wrap_socket(client.socket, server_hostname="localhost")
    except (OSError, ssl.SSLError) as e:
        print(f"NONE handshake: {e}", flush=True)
        return
    for message in messages:
        try:
            reply = client.send_message(message)
        except (OSError, ssl.SSLError) as e:
            print(f"NONE {e}", flush=True)
            return
        if not reply:
            print("NONE closed", flush=True)
            return
        text = reply.decode("utf-8", "replace").strip("\x0b\x1c\r")
        print("ACK " + text.replace("\r", "\n").strip().replace("\n", " / "), flush=True)
    client.close()


if __name__ == "__main__":
    main()
