"""The payer's side of X12 eligibility for the tests, on the independent linuxforhealth-x12
parser: `check270` reads a 270 on stdin, validates it against 005010X279A1 and prints what it
asks as JSON (or the parser's errors, exit 1); `emit271 SCENARIO TRACE` prints a 271 the library
wrote for that trace. Scenarios: active, inactive (written by the library from a parsed model),
member_id (AAA 72 in 2100C) and payer_down (AAA 42 in 2000A, no 2000B), written here: the
library types 2100C's AAA with 2100B's reason codes (it refuses 72) and requires a 2000B, which
the guide leaves out when the payer itself cannot answer."""

import json
import sys

from linuxforhealth.x12.io import X12ModelReader

ISA = ("ISA*00*          *00*          *ZZ*PAYER01        *ZZ*CLINIC01       *261202*0915*^*00501*"
       "000000901*0*T*:~GS*HB*PAYER01*CLINIC01*20261202*0915*901*X*005010X279A1~")
TAIL = "GE*1*901~IEA*1*000000901~"

HEAD = ("ST*271*0901*005010X279A1~BHT*0022*11*{trace}*20261202*0915~HL*1**20*1~"
        "NM1*PR*2*ACME HEALTH*****PI*60054~HL*2*1*21*1~NM1*1P*2*MAIN STREET CLINIC*****XX*1234567893~"
        "HL*3*2*22*0~TRN*2*{trace}*9CLINIC001~NM1*IL*1*DOE*JANE****MI*W123456789~")

LIBRARY = {"active", "inactive"}

SCENARIOS = {
    "active": HEAD + "DMG*D8*19800101*F~DTP*346*D8*20260101~EB*1*IND*30**GOLD PPO~"
              "EB*C*IND*30***29*250.5~EB*B*IND*98***27*25*****Y~",
    "inactive": HEAD + "DMG*D8*19800101*F~EB*6*IND*30~",
    "member_id": HEAD + "AAA*Y**72*C~DMG*D8*19800101*F~",
    "payer_down": ("ST*271*0901*005010X279A1~BHT*0022*11*{trace}*20261202*0915~HL*1**20*0~"
                   "AAA*Y**42*R~NM1*PR*2*ACME HEALTH*****PI*60054~"),
}


def models(text):
    with X12ModelReader(text) as reader:
        return list(reader.models())


def check270(text):
    found = models(text)
    if len(found) != 1 or type(found[0]).__name__ != "EligibilityInquiry":
        raise ValueError(f"expected one 270, got {[type(m).__name__ for m in found]}")
    subscriber = found[0].loop_2000a[0].loop_2000b[0].loop_2000c[0]
    member = subscriber.loop_2100c
    return {
        "trace": subscriber.trn_segment[0].reference_identification_1,
        "member_id": member.nm1_segment.identification_code,
        "service_types": member.loop_2110c.eq_segment.service_type_code,
    }


def emit271(scenario, trace):
    body = SCENARIOS[scenario].format(trace=trace)
    count = body.count("~") + 1
    text = ISA + body + f"SE*{count}*0901~" + TAIL
    if scenario not in LIBRARY:
        return text
    (model,) = models(text)
    written = model.x12().replace("\n", "")
    return ISA + written + TAIL


if __name__ == "__main__":
    if sys.argv[1] == "check270":
        try:
            print(json.dumps(check270(sys.stdin.read()), default=str))
        except Exception as error:  # the parser's validation errors, whatever their type
            print(f"refused: {error}", file=sys.stderr)
            sys.exit(1)
    elif sys.argv[1] == "emit271":
        sys.stdout.write(emit271(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
