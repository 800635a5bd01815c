#!/usr/bin/env python3
"""BACnet/IP device simulator for the gateway's tests (bacpypes3, pinned in requirements.txt).

Usage: bacnet_device.py PORT [--host 127.0.0.2] [--prefix 8] [--instance 599] [--drift]
                           [--no-cov OBJECT]...
Binds unicast HOST:PORT and the broadcast address of HOST/PREFIX (127.255.255.255:PORT for /8).
Prints "bacnet_device: ready" on stderr once it answered a Who-Is of its own, so a test never
talks to a simulator that did not bind (bacpypes3 retries a failed bind silently, forever).

Objects:
  device,INSTANCE           'edge-sim-INSTANCE'
  analog-value,1            'Zone Temperature Setpoint'  commandable, relinquish-default 21.0, degC
  analog-input,1            'Zone CO2'                   612.0 ppm (moves +/-1 every 5 s with --drift)
  analog-input,2            'Zone Temperature'           21.5 degC
  binary-output,1           'Supply Fan'                 commandable, relinquish-default inactive

Commands on stdin, one per line, so a test can change the "building" and look at it:
  set analog-input,2 23.0   sets a present value (analog objects)
  show analog-value,1       logs "show analog-value,1 PV [16 slots]" (commandable objects),
                            each slot the written value or null: who holds the object
"""
import argparse, asyncio, os, socket, sys

import bacpypes3
from bacpypes3.app import Application
from bacpypes3.argparse import SimpleArgumentParser
from bacpypes3.local.analog import AnalogInputObject, AnalogValueObjectCmd
from bacpypes3.local.binary import BinaryOutputObject


def log(msg):
    print(f"bacnet_device: {msg}", file=sys.stderr, flush=True)


def patch_loopback_shortcut():
    """bacpypes3 0.0.110 short-circuits ANY unicast to 127.x.x.x:<own port> back into itself
    instead of sending it, so replies to a gateway on another loopback address with the same
    UDP port (the normal BACnet set-up, needed for broadcasts) never leave the process. Patch:
    only an exact (host, port) match counts as self."""
    import inspect, textwrap
    import bacpypes3.ipv4 as ipv4
    src = textwrap.dedent(inspect.getsource(ipv4.IPv4DatagramServer.indication))
    old = 'pdu_destination[0].startswith("127.")'
    if old not in src:
        return "not needed (pattern absent)"
    ns = {}
    exec(compile(src.replace(old, "False"), ipv4.__file__, "exec"), vars(ipv4), ns)
    ipv4.IPv4DatagramServer.indication = ns["indication"]
    return "patched"


def check_free(host, port):
    """bacpypes3 binds with SO_REUSEPORT: a stale simulator on the same address would share the
    traffic silently. A plain bind fails on an address anyone holds."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((host, port))
    except OSError as e:
        log(f"cannot bind {host}:{port}: {e}")
        sys.exit(2)
    finally:
        s.close()


async def answers_who_is(host, port, instance):
    """True once the device answers a unicast Who-Is sent from an ephemeral port."""
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    try:
        for _ in range(50):
            s.sendto(bytes.fromhex("810a000801001008"), (host, port))
            try:
                data = await asyncio.wait_for(loop.sock_recv(s, 1500), 0.2)
            except asyncio.TimeoutError:
                continue
            # I-Am: ... c4 <object id> ; device type 8 in the top 10 bits.
            oid = (8 << 22) | instance
            if oid.to_bytes(4, "big") in data:
                return True
        return False
    finally:
        s.close()


def slot(pv):
    """A priority-array slot as JSON-ish text: null, or the value written there."""
    choice = pv._choice
    if choice is None or choice == "null":
        return "null"
    value = getattr(pv, choice)
    return str(float(value)) if choice == "real" else str(value)


async def stdin_commands(objects, commandable):
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        parts = line.split()
        if len(parts) == 3 and parts[0] == "set" and parts[1] in objects:
            objects[parts[1]].presentValue = float(parts[2])
            log(f"set {parts[1]} = {parts[2]}")
        elif len(parts) == 2 and parts[0] == "show" and parts[1] in commandable:
            o = commandable[parts[1]]
            slots = ",".join(slot(pv) for pv in o.priorityArray)
            log(f"show {parts[1]} {o.presentValue} [{slots}]")
        elif parts:
            log(f"unknown command: {line.strip()}")


async def main():
    p = SimpleArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("port", type=int)
    p.add_argument("--host", default="127.0.0.2")
    p.add_argument("--prefix", type=int, default=8)
    p.add_argument("--drift", action="store_true", help="move the CO2 value every 5 s")
    p.add_argument("--no-cov", action="append", default=[], metavar="OBJECT",
                   help="refuse SubscribeCOV for OBJECT (e.g. analog-input,1), as devices without COV do")
    p.set_defaults(instance=599)
    a = p.parse_args()
    a.name = f"edge-sim-{a.instance}"
    a.address = f"{a.host}/{a.prefix}:{a.port}"
    check_free(a.host, a.port)
    shortcut = patch_loopback_shortcut()
    app = Application.from_args(a)
    sp = AnalogValueObjectCmd(
        objectIdentifier=("analog-value", 1),
        objectName="Zone Temperature Setpoint",
        presentValue=21.0,
        relinquishDefault=21.0,
        units="degreesCelsius",
        statusFlags=[0, 0, 0, 0],
        covIncrement=0.1,
        eventState="normal",
        outOfService=False,
    )
    co2 = AnalogInputObject(
        objectIdentifier=("analog-input", 1),
        objectName="Zone CO2",
        presentValue=612.0,
        units="partsPerMillion",
        statusFlags=[0, 0, 0, 0],
        covIncrement=5.0,
        eventState="normal",
        outOfService=False,
    )
    temp = AnalogInputObject(
        objectIdentifier=("analog-input", 2),
        objectName="Zone Temperature",
        presentValue=21.5,
        units="degreesCelsius",
        statusFlags=[0, 0, 0, 0],
        covIncrement=0.1,
        eventState="normal",
        outOfService=False,
    )
    fan = BinaryOutputObject(
        objectIdentifier=("binary-output", 1),
        objectName="Supply Fan",
        presentValue="inactive",
        relinquishDefault="inactive",
        polarity="normal",
        statusFlags=[0, 0, 0, 0],
        eventState="normal",
        outOfService=False,
    )
    for o in (sp, co2, temp, fan):
        app.add_object(o)
    named = {"analog-value,1": sp, "analog-input,1": co2, "analog-input,2": temp, "binary-output,1": fan}
    for name in a.no_cov:
        # bacpypes3 answers services/cov-subscription-failed for an object without criteria.
        named[name]._cov_criteria = None
    if not await answers_who_is(a.host, a.port, a.instance):
        log(f"no answer on {a.host}:{a.port}: the address could not be bound")
        sys.exit(3)
    log(f"ready: bacpypes3 {bacpypes3.__version__} device,{a.instance} on {a.address} (loopback shortcut: {shortcut})")
    asyncio.ensure_future(stdin_commands({"analog-input,1": co2, "analog-input,2": temp},
                                         {"analog-value,1": sp, "binary-output,1": fan}))
    step = 1.0
    while True:
        await asyncio.sleep(5)
        if a.drift:
            co2.presentValue = float(co2.presentValue) + step
            step = -step


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
