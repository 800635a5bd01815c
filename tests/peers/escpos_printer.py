#!/usr/bin/env python3
"""ESC/POS serial ticket printer for the test suite (pyserial, pinned in requirements.txt).

escpos_printer.py --port /path/to/pty --capture CAPTURE.bin --control CONTROL.json

Opens the printer end of a socat pty pair. Every byte received is appended unchanged to the
capture file. A real-time status request DLE EOT n (0x10 0x04 n, n = 1..4) is answered with
one byte read from the control file at that moment; every other byte is only captured. The
control file (JSON, re-read per request; missing means a ready printer):

  {"answer": true,                      false: no answer at all (printer switched off)
   "status": {"1": 18, "2": 18, "3": 18, "4": 18},   the byte per n (18 = 0x12, all clear)
   "noise": "ff00aa"}                   hex bytes sent before every answer (line noise)

Prints "escpos_printer: ready" on stderr once the port is open.
"""
import argparse, json, sys

import serial

READY = {"1": 0x12, "2": 0x12, "3": 0x12, "4": 0x12}


def control(path):
    try:
        with open(path) as f:
            c = json.load(f)
    except (OSError, ValueError):
        c = {}
    status = dict(READY)
    status.update({str(k): int(v) for k, v in c.get("status", {}).items()})
    return c.get("answer", True), status, bytes.fromhex(c.get("noise", ""))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", required=True)
    ap.add_argument("--capture", required=True)
    ap.add_argument("--control", required=True)
    args = ap.parse_args()
    port = serial.Serial(args.port, baudrate=9600, timeout=0.05)
    print("escpos_printer: ready", file=sys.stderr, flush=True)
    # Position in a DLE EOT n request: 0 none, 1 after DLE, 2 after DLE EOT.
    state = 0
    with open(args.capture, "ab") as capture:
        while True:
            data = port.read(4096)
            if not data:
                continue
            capture.write(data)
            capture.flush()
            for b in data:
                if state == 2:
                    state = 0
                    if 1 <= b <= 4:
                        answer, status, noise = control(args.control)
                        if answer:
                            port.write(noise + bytes([status[str(b)] & 0xFF]))
                            port.flush()
                        continue
                if b == 0x10:
                    state = 1
                elif state == 1 and b == 0x04:
                    state = 2
                else:
                    state = 0


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
