#!/usr/bin/env python3
"""Modbus TCP / RTU device simulator for the test suite (pymodbus, pinned in requirements.txt).

TCP:  modbus_sim.py --tcp PORT [--map MAP.json]            binds 127.0.0.1:PORT
RTU:  modbus_sim.py --rtu /path/to/pty [--baud 9600 --parity N --stopbits 1 --bytesize 8]

MAP.json (default: the CO2/temperature map below) lists typed values, encoded here with
Python's struct so that the gateway's decoder is checked against an independent encoder:

  {"unit": 1, "values": [
     {"table": "holding", "address": 10, "type": "f32", "value": 123.456,
      "word_order": "little", "byte_order": "big"},
     {"table": "coil", "address": 0, "type": "bool", "value": true},
     {"table": "input", "address": 100, "type": "u16", "value": 0, "tick_ms": 200}]}

tables: holding, input, coil, discrete_input; types: u16 i16 u32 i32 f32 bool. An entry with
`tick_ms` adds 1 to its value every tick_ms (a register that changes); with `start_file` too,
only once that file exists (a test says when the value starts to change). Addresses not listed
answer exception 2 (illegal data address): the blocks are sparse.
"""
import argparse, asyncio, json, logging, os, struct, sys

import pymodbus
from pymodbus.datastore import ModbusDeviceContext, ModbusServerContext, ModbusSparseDataBlock
from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

DEFAULT_MAP = {"unit": 1, "values": [
    {"table": "input", "address": 0, "type": "u16", "value": 612},
    {"table": "input", "address": 1, "type": "i16", "value": 215},
    {"table": "input", "address": 2, "type": "u16", "value": 45},
    {"table": "holding", "address": 0, "type": "u16", "value": 1000},
    {"table": "coil", "address": 0, "type": "bool", "value": True},
    {"table": "discrete_input", "address": 0, "type": "bool", "value": False},
]}

PACK = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "f32": ">f"}


def words(entry, value):
    """Register words for a typed value, in the entry's byte and word order."""
    if entry["type"] == "bool":
        return [1 if value else 0]
    raw = struct.pack(PACK[entry["type"]], value)
    ws = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if entry.get("byte_order", "big") == "little":
        ws = [w[::-1] for w in ws]
    if entry.get("word_order", "big") == "little":
        ws = ws[::-1]
    return [int.from_bytes(w, "big") for w in ws]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tcp", type=int, metavar="PORT")
    ap.add_argument("--rtu", metavar="SERIAL_DEVICE")
    ap.add_argument("--map", metavar="MAP_JSON")
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--parity", default="N", choices="NEO")
    ap.add_argument("--stopbits", type=int, default=1)
    ap.add_argument("--bytesize", type=int, default=8)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec = json.load(open(a.map)) if a.map else DEFAULT_MAP
    tables = {"holding": {}, "input": {}, "coil": {}, "discrete_input": {}}
    for e in spec["values"]:
        for i, w in enumerate(words(e, e["value"])):
            # pymodbus' device context adds 1 to every wire address before the block lookup.
            tables[e["table"]][e["address"] + i + 1] = w
    # A sparse block refuses an empty map; an address no map uses stands in.
    # Not mutable: a write to an address the map does not list is refused like a read.
    blocks = {t: ModbusSparseDataBlock(v or {65534: 0}, mutable=False) for t, v in tables.items()}
    device = ModbusDeviceContext(di=blocks["discrete_input"], co=blocks["coil"],
                                 ir=blocks["input"], hr=blocks["holding"])
    context = ModbusServerContext(devices={spec.get("unit", 1): device}, single=False)

    async def tick(entry):
        value = entry["value"]
        while "start_file" in entry and not os.path.exists(entry["start_file"]):
            await asyncio.sleep(0.05)
        while True:
            await asyncio.sleep(entry["tick_ms"] / 1000)
            value += 1
            blocks[entry["table"]].setValues(entry["address"] + 1, words(entry, value))

    async def serve():
        if a.rtu:
            server = ModbusSerialServer(context, framer=FramerType.RTU, port=a.rtu, baudrate=a.baud,
                                        bytesize=a.bytesize, parity=a.parity, stopbits=a.stopbits)
        else:
            server = ModbusTcpServer(context, address=("127.0.0.1", a.tcp))
        await server.serve_forever(background=True)
        # Kept in a local: asyncio holds only weak references to tasks.
        tickers = [asyncio.create_task(tick(e)) for e in spec["values"] if "tick_ms" in e]
        # The readiness signal the tests wait for: the port is open and requests are served.
        print(f"modbus_sim: ready, pymodbus {pymodbus.__version__}", file=sys.stderr, flush=True)
        await server.serving
        for t in tickers:
            t.cancel()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
