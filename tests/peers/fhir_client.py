"""A SMART Backend Services client of the gateway's FHIR API, for tests/fhir_api.rs.

It signs its own private_key_jwt assertions (PyJWT + cryptography) and reads through the real
FHIR client library `fhirclient`. Every command prints one JSON object on stdout.

  keygen  --alg ES384|RS384 --kid KID --out PREFIX   writes PREFIX.key, PREFIX.pub, PREFIX.jwks
  token   --base URL --client ID --key FILE --alg ALG [--kid KID] --scope S
          [--exp-secs N] [--jti J] [--aud URL]       the token endpoint's status and answer
  session --base URL --client ID --key FILE --alg ALG [--kid KID] --scope S --patient P
                                                     metadata, a paged Encounter search, reads
"""

import argparse
import json
import sys
import time
import uuid

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def keygen(args):
    if args.alg.startswith("ES"):
        curve = ec.SECP384R1() if args.alg == "ES384" else ec.SECP256R1()
        key = ec.generate_private_key(curve)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    algo = jwt.algorithms.ECAlgorithm if args.alg.startswith("ES") else jwt.algorithms.RSAAlgorithm
    jwk = json.loads(algo.to_jwk(key.public_key()))
    jwk.update({"kid": args.kid, "alg": args.alg, "use": "sig"})
    with open(args.out + ".key", "wb") as f:
        f.write(private)
    with open(args.out + ".pub", "wb") as f:
        f.write(public)
    with open(args.out + ".jwks", "w") as f:
        json.dump({"keys": [jwk]}, f)
    return {"ok": True}


def assertion(args, token_url):
    with open(args.key, "rb") as f:
        key = f.read()
    now = int(time.time())
    claims = {
        "iss": args.client,
        "sub": args.client,
        "aud": args.aud or token_url,
        "exp": now + args.exp_secs,
        "jti": args.jti or str(uuid.uuid4()),
    }
    headers = {"kid": args.kid} if args.kid else None
    return jwt.encode(claims, key, algorithm=args.alg, headers=headers)


def request_token(args):
    config = requests.get(args.base + "/fhir/R4/.well-known/smart-configuration", timeout=10)
    config.raise_for_status()
    token_url = config.json()["token_endpoint"]
    form = {
        "grant_type": "client_credentials",
        "scope": args.scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion(args, token_url),
    }
    r = requests.post(token_url, data=form, timeout=10)
    try:
        body = r.json()
    except ValueError:
        body = r.text
    return {"status": r.status_code, "body": body}


def session(args):
    from fhirclient.models.encounter import Encounter
    from fhirclient.models.patient import Patient
    from fhirclient.server import FHIRServer

    got = request_token(args)
    if got["status"] != 200:
        return {"token": got}
    server = FHIRServer(None, base_uri=args.base + "/fhir/R4")
    server.session.headers["Authorization"] = "Bearer " + got["body"]["access_token"]
    server.get_capability()
    capability = server.capabilityStatement
    security = capability.rest[0].security
    token_uri = [e.valueUri for x in security.extension for e in x.extension if e.url == "token"]
    pages = []
    search = Encounter.where(struct={"patient": args.patient, "_count": "2"})
    for bundle in search.perform_iter(server):
        pages.append([e.resource.id for e in bundle.entry or []])
    first = pages[0][0] if pages and pages[0] else None
    encounter = Encounter.read(first, server) if first else None
    patient = Patient.read(args.patient, server)
    found = Patient.where(struct={"_id": args.patient}).perform_iter(server)
    return {
        "token": got,
        "fhir_version": capability.fhirVersion,
        "resources": [r.type for r in capability.rest[0].resource],
        "token_uri": token_uri,
        "pages": pages,
        "encounter": encounter.as_json() if encounter else None,
        "patient_family": patient.name[0].family if patient.name else None,
        "patient_search": [e.resource.id for b in found for e in b.entry or []],
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["keygen", "token", "session"])
    p.add_argument("--alg", default="ES384")
    p.add_argument("--kid")
    p.add_argument("--out")
    p.add_argument("--base")
    p.add_argument("--client")
    p.add_argument("--key")
    p.add_argument("--scope")
    p.add_argument("--exp-secs", type=int, default=120)
    p.add_argument("--jti")
    p.add_argument("--aud")
    p.add_argument("--patient")
    args = p.parse_args()
    run = {"keygen": keygen, "token": request_token, "session": session}[args.command]
    json.dump(run(args), sys.stdout)


if __name__ == "__main__":
    main()
