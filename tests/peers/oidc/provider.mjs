#!/usr/bin/env node
// Test-only OpenID provider for the gateway's single sign-on: oidc-provider (pinned by
// package-lock.json) on 127.0.0.1, issuer http://127.0.0.1:PORT.
// Usage: node provider.mjs SETTINGS_JSON_FILE, the file holding
//   { "port": P, "client": { client_id, client_secret, redirect_uris }, "accounts": { id: { claims, amr } } }
// - Sign-in: GET /interaction/:uid answers a form naming the accounts; POST /interaction/:uid
//   with `account=<id>` signs that account in with its `amr`. The gateway is a first-party
//   client: its scopes are granted without a consent screen.
// - Claims of the scopes asked for (`openid`: sub and amr, `profile`: preferred_username,
//   `groups`: groups) are put in the ID token itself, as the gateway reads them there.
// - POST /_peer/tamper with body `nonce` or `signature` spoils the next ID token the token
//   endpoint issues: another nonce (signed with the provider's own key), or the right claims
//   signed by a second key under the provider's key id.
// - It prints "listening http://127.0.0.1:P" on stderr once the port is bound, and a line before
//   each step of its start, so that a start that stalls shows where.
import { createSign, generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

const settings = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${settings.port}`;
const KID = 'k1';

function rsaKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return privateKey;
}
console.error('generating keys');
const signing = rsaKey();
const forger = rsaKey();
console.error('building the provider');

const accounts = settings.accounts;
const provider = new Provider(issuer, {
  clients: [{
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...settings.client,
  }],
  jwks: { keys: [{ ...signing.export({ format: 'jwk' }), kid: KID, use: 'sig', alg: 'RS256' }] },
  cookies: { keys: ['test-only-cookie-key'] },
  claims: {
    openid: ['sub', 'amr'], profile: ['preferred_username'], groups: ['groups'],
  },
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: false } },
  pkce: { required: () => true },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...account.claims }) };
  },
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(ctx.oidc.params.scope || 'openid');
    await grant.save();
    return grant;
  },
});

let tamper = null;

const b64 = (value) => Buffer.from(value).toString('base64url');

function resign(idToken, key, change) {
  const [header, payload] = idToken.split('.');
  const claims = change(JSON.parse(Buffer.from(payload, 'base64url').toString()));
  const body = `${header}.${b64(JSON.stringify(claims))}`;
  const signature = createSign('RSA-SHA256').update(body).sign(key);
  return `${body}.${b64(signature)}`;
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/_peer/tamper' && ctx.method === 'POST') {
    let body = '';
    for await (const chunk of ctx.req) body += chunk;
    tamper = body.trim();
    ctx.body = { tamper };
    return;
  }
  const interaction = ctx.path.match(/^\/interaction\/([^/]+)$/);
  if (interaction && ctx.method === 'GET') {
    await provider.interactionDetails(ctx.req, ctx.res);
    const options = Object.keys(accounts).map((id) => `<option>${id}</option>`).join('');
    ctx.type = 'html';
    ctx.body = `<form method="post"><select name="account">${options}</select><button>Sign in</button></form>`;
    return;
  }
  if (interaction && ctx.method === 'POST') {
    await provider.interactionDetails(ctx.req, ctx.res);
    let body = '';
    for await (const chunk of ctx.req) body += chunk;
    const id = new URLSearchParams(body).get('account');
    const account = accounts[id];
    const result = account
      ? { login: { accountId: id, amr: account.amr } }
      : { error: 'access_denied', error_description: 'unknown account' };
    const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, {
      mergeWithLastSubmission: false,
    });
    ctx.status = 303;
    ctx.redirect(returnTo);
    return;
  }
  await next();
  if (ctx.path === '/token' && tamper && ctx.body && ctx.body.id_token) {
    const idToken = ctx.body.id_token;
    ctx.body = {
      ...ctx.body,
      id_token: tamper === 'nonce'
        ? resign(idToken, signing, (c) => ({ ...c, nonce: 'not-the-gateways' }))
        : resign(idToken, forger, (c) => c),
    };
    tamper = null;
  }
});

console.error('binding');
createServer(provider.callback()).listen(settings.port, '127.0.0.1', () => {
  console.error(`listening ${issuer}`);
});
