#!/usr/bin/env python3
"""An SMTP server for the messaging tests (aiosmtpd 1.4.6), on 127.0.0.1.

    smtp_server.py PORT MAILDIR [--starttls CERT KEY | --implicit CERT KEY] [--auth USER:PASSWORD]

Every message accepted is written to MAILDIR/new/<n>.eml and announced on stderr as
`received <Message-ID> <recipient>` once it is on disk, so a test waits for the line or the
file. `--starttls` offers STARTTLS and refuses mail before it; `--implicit` speaks TLS from the
first byte (SMTPS); `--auth` refuses mail without AUTH PLAIN/LOGIN as that user. Prints `ready`
on stderr once it listens; stops on SIGTERM.
"""

import argparse
import asyncio
import email
import os
import signal
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Mailbox:
    def __init__(self, folder):
        self.folder = folder
        os.makedirs(os.path.join(folder, "new"), exist_ok=True)
        self.count = len(os.listdir(os.path.join(folder, "new")))

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        path = os.path.join(self.folder, "new", f"{self.count:05}.eml")
        with open(path + ".tmp", "wb") as f:
            f.write(envelope.original_content)
            f.flush()
            os.fsync(f.fileno())
        os.rename(path + ".tmp", path)
        message_id = email.message_from_bytes(envelope.original_content).get("Message-ID", "-")
        print(f"received {message_id} {','.join(envelope.rcpt_tos)}", file=sys.stderr, flush=True)
        return "250 OK"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("maildir")
    p.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--implicit", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--auth")
    a = p.parse_args()

    def context(pair):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*pair)
        return ctx

    user, password = (a.auth.split(":", 1) if a.auth else (None, None))

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        print(f"auth {mechanism} {'ok' if ok else 'refused'}", file=sys.stderr, flush=True)
        return AuthResult(success=ok)

    handler = Mailbox(a.maildir)

    def factory():
        kwargs = {}
        if a.starttls:
            kwargs.update(tls_context=context(a.starttls), require_starttls=True)
        if a.auth:
            kwargs.update(
                authenticator=authenticator,
                auth_required=True,
                # Over implicit TLS the whole connection is encrypted already.
                auth_require_tls=not a.implicit,
            )
        return SMTP(handler, hostname="localhost", **kwargs)

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        loop.create_server(
            factory,
            host="127.0.0.1",
            port=a.port,
            ssl=context(a.implicit) if a.implicit else None,
        )
    )
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    print("ready", file=sys.stderr, flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
