#!/usr/bin/env bash
# Installs what the test suite's peers need, only when missing (idempotent). Debian, as root or
# with sudo. Versions are Debian 12's: mosquitto 2.0.11, socat 1.7.4, lintian 2.116,
# chromium and chromium-driver 156, rabbitmq-server 3.10.8, nats-server 2.9.10.
set -euo pipefail
need=()
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
command -v socat >/dev/null || need+=(socat)
command -v openssl >/dev/null || need+=(openssl)
command -v lintian >/dev/null || need+=(lintian)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v curl >/dev/null || need+=(curl)
# The audit tampering test edits the journal behind the gateway's back.
command -v sqlite3 >/dev/null || need+=(sqlite3)
# The relay's NATS tests run a JetStream server with its MQTT listener (tests/relay_nats.rs).
command -v nats-server >/dev/null || need+=(nats-server)
# The encrypted-journal build compiles SQLCipher and OpenSSL from source.
command -v perl >/dev/null || need+=(perl)
command -v make >/dev/null || need+=(make)
command -v npm >/dev/null || need+=(nodejs npm)
command -v python3 >/dev/null || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# The browser test drives Debian's Chromium through its WebDriver (tests/browser.rs).
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
# The relay's RabbitMQ tests (tests/relay_rabbit.rs) start nodes of their own with Debian's
# rabbitmq-server and its MQTT plugin, on their own ports and directories.
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
# The messaging tests' HTTP SMS gateway (tests/common/smsc.rs starts its own bearerbox and
# smsbox on loopback; Debian 12's kannel 1.4.5).
[ -x /usr/sbin/bearerbox ] || need+=(kannel)
# The messaging tests' SIP callee (tests/common/sipp.rs runs SIPp scenarios of tests/peers/sipp;
# Debian 12's sip-tester 3.6.1).
command -v sipp >/dev/null || need+=(sip-tester)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "test-deps: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The package enables and starts the system's node; the tests want none (a CI machine
  # should not carry a broker on 5672 for every later job), so one this script installed is
  # stopped and disabled. A node someone runs on purpose was there before and is left alone.
  if [[ " ${need[*]} " == *" rabbitmq-server "* ]] && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true
  fi
fi
# Python peers (the hl7 package's mllp_send, the pymodbus simulator with pyserial, ...), pinned in
# tests/peers/requirements.txt; installed only when one of them is missing or at another version.
req="$(dirname "$0")/../tests/peers/requirements.txt"
pinned="$(grep -vE '^\s*(#|$)' "$req")"
# Every pinned line must be installed as such (grep -f alone is satisfied by any one of them);
# case aside, as pip freeze prints a project's own spelling (PyOTP).
if [ "$(python3 -m pip freeze 2>/dev/null | grep -cixF "$pinned")" -ne "$(printf '%s\n' "$pinned" | wc -l)" ]; then
  echo "test-deps: installing Python peers from $req" >&2
  # Debian's own Python refuses user packages (PEP 668); the peers are test tools for this
  # machine, so they go next to the system's, as CI's throwaway machine wants.
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --disable-pip-version-check -r "$req" >&2
fi
# The FHIR R4 test server (@medplum/fhir-router, pinned by tests/peers/fhir/package-lock.json):
# `npm ci` only when node_modules is missing or was installed from another lock file.
# The same for the OpenID provider of the single sign-on tests (oidc-provider) and the
# messaging tests' SMSC (smpp).
npm_peer() {
  local dir="$(dirname "$0")/../tests/peers/$1"
  local stamp="$dir/node_modules/.lock-sha256"
  local want
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "test-deps: installing the $2's packages" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$want" > "$stamp"
  fi
}
npm_peer fhir "FHIR test server"
npm_peer oidc "OpenID test provider"
# The messaging tests' SMSC (the npm smpp server, scripted by the tests).
npm_peer smsc "test SMSC"
# The independent X12 parser (linuxforhealth-x12) needs pydantic 1, which other Python tools on
# the machine may not want: it gets a virtual environment of its own, remade only when
# tests/peers/x12/requirements.txt changes.
x12="$(dirname "$0")/../tests/peers/x12"
want="$(sha256sum "$x12/requirements.txt" | cut -d' ' -f1)"
if [ ! -f "$x12/.venv/.requirements-sha256" ] || [ "$(cat "$x12/.venv/.requirements-sha256")" != "$want" ]; then
  echo "test-deps: installing the X12 checker" >&2
  rm -rf "$x12/.venv"
  python3 -m venv "$x12/.venv"
  "$x12/.venv/bin/pip" install -q --disable-pip-version-check -r "$x12/requirements.txt" >&2
  echo "$want" > "$x12/.venv/.requirements-sha256"
fi
echo "test-deps: ok" >&2
