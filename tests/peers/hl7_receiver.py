#!/usr/bin/env python3
"""HL7 v2 MLLP receiver for tests (python package `hl7`, asyncio), foreground.

Usage: hl7_receiver.py PORT LOG
Appends every received message's control id (MSH-10) to LOG, one per line, and the whole
message to LOG.messages (segments one per line, a blank line after each message), then answers:
  control id starting with REJ  -> AR (the message is refused)
  control id starting with ERR  -> AE the first time, AA afterwards
  control id starting with MUTE -> no answer the first time (the sender times out), AA afterwards
  anything else                 -> AA
Prints "ready" on stdout once listening.
"""
import asyncio, sys

import hl7
from hl7.mllp import start_hl7_server

seen = {}


def make_handler(log_path):
    async def handle(reader, writer):
        try:
            while not writer.is_closing():
                msg = await reader.readmessage()
                ctrl = str(msg.segment("MSH")[10])
                seen[ctrl] = seen.get(ctrl, 0) + 1
                with open(log_path + ".messages", "a", encoding="utf-8") as f:
                    f.write(str(msg).replace("\r", "\n").strip() + "\n\n")
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(ctrl + "\n")
                first = seen[ctrl] == 1
                if ctrl.startswith("MUTE") and first:
                    continue
                if ctrl.startswith("REJ"):
                    code = "AR"
                elif ctrl.startswith("ERR") and first:
                    code = "AE"
                else:
                    code = "AA"
                writer.writemessage(msg.create_ack(code))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            if not writer.is_closing():
                writer.close()
    return handle


async def main():
    port, log_path = int(sys.argv[1]), sys.argv[2]
    async with await start_hl7_server(make_handler(log_path), host="127.0.0.1", port=port) as server:
        print("ready", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
