#!/usr/bin/env node
// The SMSC of the messaging tests: the npm `smpp` 0.5.1 server on 127.0.0.1, scripted by the
// test through its stdin, one command a line:
//
//   receipts delivered|expired|failed|none   what deliver_sm receipts say from now on
//   receipts held                            keep each receipt back until `release`
//   release                                  send every held receipt now, saying DELIVRD
//   throttle N                               answer the next N submit_sm with 0x58 (throttled)
//   window                                   print the most submit_sm ever unanswered at once
//   span N                                   print the shortest time (ms) from a submit_sm to
//                                            the Nth after it
//
// Usage: node smsc.js PORT [SYSTEM_ID:PASSWORD]. It answers every submit_sm with a new decimal
// message id, after `SMSC_DELAY_MS` (default 0), and then sends a receipt
// (`id:<id> sub:001 dlvrd:001 submit date:... done date:... stat:DELIVRD err:000 text:...`)
// unless receipts are `none`. Logs on stderr: `ready`, `bind <kind> <system_id>`,
// `submit <id> <destination> <data_coding> <text as JSON>`, `validity <id> <seconds|none>`
// (the submit's validity_period, relative to now), `throttled <destination>`,
// `receipt <id> <stat>`, `window <n>`, `span <ms>` (-1 before N + 1 submits). Stops on SIGTERM.
'use strict';
const smpp = require('smpp');
const readline = require('readline');

const port = Number(process.argv[2] || 2775);
const [wantId, wantPassword] = (process.argv[3] || '').split(':');
const delay = Number(process.env.SMSC_DELAY_MS || 0);
let receipts = 'delivered';
let throttle = 0;
let nextId = 1000;
let open = 0;
let widest = 0;
const submitTimes = [];
const held = [];
const log = (line) => process.stderr.write(line + '\n');
const sessions = new Set();

const stat = { delivered: 'DELIVRD', expired: 'EXPIRED', failed: 'UNDELIV' };

function smppDate(d) {
  const p = (n) => String(n).padStart(2, '0');
  return `${p(d.getUTCFullYear() % 100)}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}`;
}

const server = smpp.createServer((session) => {
  sessions.add(session);
  session.on('close', () => sessions.delete(session));
  session.on('error', () => {});
  for (const kind of ['bind_transceiver', 'bind_transmitter', 'bind_receiver']) {
    session.on(kind, (pdu) => {
      if (wantId && (pdu.system_id !== wantId || pdu.password !== wantPassword)) {
        log(`bind refused ${pdu.system_id}`);
        session.send(pdu.response({ command_status: smpp.ESME_RBINDFAIL }));
        session.close();
        return;
      }
      log(`bind ${kind.slice(5)} ${pdu.system_id}`);
      session.send(pdu.response({ system_id: 'test-smsc' }));
    });
  }
  session.on('enquire_link', (pdu) => session.send(pdu.response()));
  session.on('unbind', (pdu) => {
    session.send(pdu.response());
    session.close();
  });
  session.on('submit_sm', (pdu) => {
    submitTimes.push(Number(process.hrtime.bigint() / 1000000n));
    if (throttle > 0) {
      throttle -= 1;
      log(`throttled ${pdu.destination_addr}`);
      session.send(pdu.response({ command_status: smpp.ESME_RTHROTTLED }));
      return;
    }
    open += 1;
    widest = Math.max(widest, open);
    const id = String(nextId++);
    const sm = pdu.short_message || {};
    const body = sm.message !== undefined ? sm.message : sm;
    const text = Buffer.isBuffer(body) ? body.toString('hex') : String(body);
    log(`submit ${id} ${pdu.destination_addr} ${pdu.data_coding} ${JSON.stringify(text)}`);
    // The npm smpp decoder turns a relative validity_period into the Date it ends at.
    const validity = pdu.validity_period instanceof Date
      ? String(Math.round((pdu.validity_period.getTime() - Date.now()) / 1000))
      : 'none';
    log(`validity ${id} ${validity}`);
    setTimeout(() => {
      open -= 1;
      session.send(pdu.response({ message_id: id }));
      if (receipts === 'none' || !(pdu.registered_delivery & 1)) return;
      if (receipts === 'held') {
        held.push({ session, pdu, id });
        return;
      }
      sendReceipt(session, pdu, id, stat[receipts]);
    }, delay);
  });
});

function sendReceipt(session, pdu, id, st) {
  const now = smppDate(new Date());
  session.deliver_sm({
    source_addr: pdu.destination_addr,
    destination_addr: pdu.source_addr,
    esm_class: 0x04,
    short_message: `id:${id} sub:001 dlvrd:${st === 'DELIVRD' ? '001' : '000'} submit date:${now} done date:${now} stat:${st} err:000 text:`,
  });
  log(`receipt ${id} ${st}`);
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, arg] = line.trim().split(/\s+/);
  if (cmd === 'receipts') receipts = arg;
  else if (cmd === 'throttle') throttle = Number(arg);
  else if (cmd === 'release') {
    // As an SMSC does, a receipt goes to whichever session of the account is bound now.
    for (const h of held.splice(0)) {
      const session = sessions.has(h.session) ? h.session : sessions.values().next().value;
      if (session) sendReceipt(session, h.pdu, h.id, 'DELIVRD');
    }
  } else if (cmd === 'window') log(`window ${widest}`);
  else if (cmd === 'span') {
    const n = Number(arg);
    let shortest = -1;
    for (let i = 0; i + n < submitTimes.length; i++) {
      const span = submitTimes[i + n] - submitTimes[i];
      if (shortest < 0 || span < shortest) shortest = span;
    }
    log(`span ${shortest}`);
  }
  log(`ok ${line.trim()}`);
});

process.on('SIGTERM', () => {
  for (const s of sessions) s.close();
  server.close();
  process.exit(0);
});
server.listen(port, '127.0.0.1', () => log('ready'));
