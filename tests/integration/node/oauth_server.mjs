// A local OAuth 2.0 authorization server for brokerd's integration tests: the real
// oidc-provider, with the grants the broker uses as a client (client_credentials, RFC 8693
// token exchange, RFC 7523 jwt-bearer), plus a plain-http control listener through which a
// test reads counters and injects faults at the token endpoint.
//
// Usage: node oauth_server.mjs CONFIG.json   (the config is documented in ../oauth.py)
// Prints one JSON "ready" line on stdout once every listener is up; logs to stderr only.
import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { generateKeyPairSync, randomBytes } from "node:crypto";

import { createLocalJWKSet, decodeJwt, jwtVerify } from "jose";
import Provider, { errors } from "oidc-provider";
// oidc-provider keeps its registered grant handlers in this private cache; reaching it is the
// only way to wrap the built-in client_credentials handler (see strictScope). The package is
// pinned to an exact version, so this internal path cannot move under us.
import instance from "oidc-provider/lib/helpers/weak_cache.js";

const JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
const TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt";
const TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token";
const BROKER_ALGS = ["EdDSA", "ES256", "RS256"];
const REQUEST_ID_HISTORY = 200;
// Token requests are read whole before the provider sees them; the provider itself refuses
// bodies over 56 KiB, so this only bounds what a misbehaving client can make us buffer.
const MAX_TOKEN_BODY = 1 << 20;

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
let accessTokenTtl = config.access_token_ttl ?? 3600;

// ---------------------------------------------------------------------------------------------
// Broker keys. The broker rotates its keys, so the JWKS file is read afresh for every
// verification: a test that rotates and immediately retries must see the new key.

function brokerJwks() {
  try {
    return JSON.parse(readFileSync(config.broker_jwks, "utf8"));
  } catch (e) {
    // Missing (broker not started yet) or half-written: no key verifies, which is the truth.
    process.stderr.write(`oauth_server: broker JWKS unreadable: ${e.message}\n`);
    return { keys: [] };
  }
}

// Verifies a JWT the broker signed (a token-exchange subject token or a jwt-bearer assertion)
// and returns its claims; anything wrong is the client's grant being invalid.
async function verifyBrokerJwt(jwt, what) {
  try {
    const { payload } = await jwtVerify(jwt, createLocalJWKSet(brokerJwks()), {
      issuer: config.broker_issuer,
      audience: config.subject_audience,
      algorithms: BROKER_ALGS,
      requiredClaims: ["exp", "sub"],
      clockTolerance: 5,
    });
    return payload;
  } catch (e) {
    const err = new errors.InvalidGrant();
    err.error_description = `${what} rejected: ${e.code || e.name}: ${e.message}`;
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Storage. oidc-provider needs an adapter for every model it persists (tokens, client assertion
// jti replay records). Clients are not stored: they are answered from the config on each lookup,
// with private_key_jwt clients given the broker's current JWKS inline. oidc-provider rebuilds a
// client whenever its metadata changes, so a rotated broker key takes effect at once; a
// jwks_uri would instead be cached by the provider for at least 60 seconds.

const clientsById = new Map(config.clients.map((c) => [c.client_id, c]));

function clientMetadata(id) {
  const client = clientsById.get(id);
  if (!client) return undefined;
  const metadata = {
    // Machine clients never use the authorization endpoint; oidc-provider's defaults
    // (response_types ["code"]) would otherwise demand redirect_uris.
    response_types: [],
    redirect_uris: [],
    ...client,
  };
  if (metadata.token_endpoint_auth_method === "private_key_jwt"
      && !metadata.jwks && !metadata.jwks_uri) {
    metadata.jwks = brokerJwks();
  }
  return metadata;
}

// Only what the enabled grants use: access tokens and client assertion jti records are saved,
// looked up and destroyed. Entries live until they expire: unlike oidc-provider's bundled
// development adapter (an LRU of 1000 entries), nothing a test issued is evicted early, and a
// replayed client assertion is always caught.
const store = new Map();

class MemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    store.set(this.key(id), {
      payload,
      expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : Infinity,
    });
  }

  async find(id) {
    if (this.model === "Client") return clientMetadata(id);
    const entry = store.get(this.key(id));
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      store.delete(this.key(id));
      return undefined;
    }
    return entry.payload;
  }

  async destroy(id) {
    store.delete(this.key(id));
  }
}

// ---------------------------------------------------------------------------------------------
// Grants.

// oidc-provider only refuses a requested scope that is one of its globally known scopes and
// missing from the client's list; any other value passes through. The broker's tests need a
// real authorization server's answer, invalid_scope, for every scope the client may not have.
// A client registered without a scope may ask for any, as in oidc-provider.
function strictScope(client, requested) {
  if (!requested || !client.scope) return requested || undefined;
  const allowed = new Set(client.scope.split(" "));
  for (const scope of requested.split(" ")) {
    if (!allowed.has(scope)) {
      throw new errors.InvalidScope("requested scope is not allowed", scope);
    }
  }
  return requested;
}

function requireParam(ctx, name) {
  const value = ctx.oidc.params[name];
  if (!value) throw new errors.InvalidRequest(`missing required parameter '${name}'`);
  return value;
}

// What the control listener's introspection reports about a token, saved with it by
// oidc-provider (extraTokenClaims): the grant, the subject (the broker JWT's for the custom
// grants, the client itself for client_credentials, as RFC 9068 §2.2 has it) and the requested
// audience and resource values (see takeTargets).
function tokenRecord(ctx) {
  return {
    grant_type: ctx.oidc.params.grant_type,
    sub: ctx.state.subject ?? ctx.oidc.client.clientId,
    ...(ctx.state.aud.length ? { aud: ctx.state.aud } : {}),
  };
}

// audience and resource values are recorded but do not restrict the token. resource is taken
// out of the request, because oidc-provider's client_credentials would otherwise look it up as
// an RFC 8707 resource server, which this server does not configure.
function takeTargets(ctx) {
  const { params } = ctx.oidc;
  ctx.state.aud = [params.audience, params.resource].flat().filter(Boolean);
  params.resource = undefined;
}

// Both custom grants issue the provider's own opaque ClientCredentials token, for the subject
// of the broker JWT.
async function issueForSubject(ctx, claims) {
  const { client, params } = ctx.oidc;
  ctx.state.subject = claims.sub;
  takeTargets(ctx);
  const token = new ctx.oidc.provider.ClientCredentials({
    client,
    scope: strictScope(client, params.scope),
  });
  const accessToken = await token.save();
  return {
    access_token: accessToken,
    token_type: token.tokenType,
    expires_in: token.expiration,
    ...(token.scope ? { scope: token.scope } : {}),
  };
}

async function tokenExchange(ctx) {
  const subjectToken = requireParam(ctx, "subject_token");
  const subjectType = requireParam(ctx, "subject_token_type");
  if (subjectType !== TYPE_JWT) {
    throw new errors.InvalidRequest(`unsupported subject_token_type, expected ${TYPE_JWT}`);
  }
  // Only access tokens are issued, so asking for anything else is refused, not silently met.
  const requested = ctx.oidc.params.requested_token_type;
  if (requested && requested !== TYPE_ACCESS_TOKEN) {
    throw new errors.InvalidRequest(`unsupported requested_token_type ${requested}`);
  }
  const claims = await verifyBrokerJwt(subjectToken, "subject_token");
  ctx.body = {
    ...(await issueForSubject(ctx, claims)),
    issued_token_type: TYPE_ACCESS_TOKEN,
  };
}

async function jwtBearer(ctx) {
  const claims = await verifyBrokerJwt(requireParam(ctx, "assertion"), "assertion");
  ctx.body = await issueForSubject(ctx, claims);
}

// ---------------------------------------------------------------------------------------------
// Test control state: counters and the fault to inject at the token endpoint.

const stats = newStats();
let fault = { mode: "none" };

function newStats() {
  return {
    token_requests: 0,
    by_grant: {},
    by_client: {},
    request_ids: [],
    last_auth: null,
    last_params: null,
  };
}

// Who the client claims to be and how it authenticates, read from the raw request the same way
// oidc-provider will (it is only counted; the provider does the real authentication).
function clientAuthOf(req, params) {
  const basic = /^basic\s+(\S+)$/i.exec(req.headers.authorization || "");
  if (basic) {
    const decoded = Buffer.from(basic[1], "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    const clientId = safeDecode(colon < 0 ? decoded : decoded.slice(0, colon));
    return { client_id: clientId, method: "basic" };
  }
  if (params.get("client_secret") !== null) {
    return { client_id: params.get("client_id"), method: "post" };
  }
  if (params.get("client_assertion") !== null) {
    let sub = params.get("client_id");
    try {
      sub = decodeJwt(params.get("client_assertion")).sub ?? sub;
    } catch {
      // A malformed assertion still counts as a jwt attempt; the provider will refuse it.
    }
    return { client_id: sub, method: "jwt" };
  }
  return { client_id: params.get("client_id"), method: "none" };
}

function safeDecode(s) {
  try {
    return decodeURIComponent(s.replace(/\+/g, "%20"));
  } catch {
    return s;
  }
}

// Counted before any fault is applied: a faulted request still reached the token endpoint.
function record(req, body) {
  const params = new URLSearchParams(body.toString("utf8"));
  stats.token_requests += 1;
  const grant = params.get("grant_type") ?? "(none)";
  stats.by_grant[grant] = (stats.by_grant[grant] ?? 0) + 1;
  const auth = clientAuthOf(req, params);
  if (auth.client_id) {
    stats.by_client[auth.client_id] = (stats.by_client[auth.client_id] ?? 0) + 1;
  }
  stats.last_auth = auth;
  stats.last_params = Object.fromEntries(params);
  const requestId = req.headers["x-request-id"];
  if (requestId !== undefined) {
    stats.request_ids.push(requestId);
    if (stats.request_ids.length > REQUEST_ID_HISTORY) stats.request_ids.shift();
  }
}

// The fault for this token request, if any; a fault with a count expires after that many.
function takeFault() {
  if (fault.mode === "none") return fault;
  const current = fault;
  if (current.count !== undefined) {
    current.count -= 1;
    if (current.count <= 0) fault = { mode: "none" };
  }
  return current;
}

function sendJson(res, status, body, headers = {}) {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "cache-control": "no-store",
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

// A JSON object of exactly `size` bytes that still carries a usable access token, so that only
// the broker's response size limit can make it fail.
function oversizeBody(size) {
  const head = '{"access_token":"oversize","token_type":"Bearer","expires_in":3600,"pad":"';
  const tail = '"}';
  return head + "x".repeat(Math.max(0, size - head.length - tail.length)) + tail;
}

// Applies an injected fault; returns true when the provider should still handle the request.
// Faults stand in for a broken or hostile server, so their answers bypass oidc-provider.
async function applyFault(f, req, res) {
  switch (f.mode) {
    case "status":
      sendJson(res, f.status ?? 500, f.body ?? { error: "server_error" }, f.headers);
      return false;
    case "slow":
      // Meant to outlast the broker's timeout; if the client is still there, answer normally.
      await new Promise((resolve) => setTimeout(resolve, f.delay_ms ?? 5000));
      return !res.destroyed && !req.socket.destroyed;
    case "malformed":
      sendJson(res, 200, '{"access_token": "abc", ');
      return false;
    case "no_token":
      sendJson(res, 200, { token_type: "Bearer", expires_in: 3600 });
      return false;
    case "error200":
      sendJson(res, 200, { error: "invalid_request" });
      return false;
    case "oversize":
      sendJson(res, 200, oversizeBody(f.size ?? 200000));
      return false;
    case "close":
      req.socket.destroy();
      return false;
    default:
      return true;
  }
}

const FAULT_MODES = new Set(
  ["none", "status", "slow", "malformed", "no_token", "error200", "oversize", "close"],
);

// ---------------------------------------------------------------------------------------------
// Listeners. They are bound first (port 0 picks a free one) so that the issuer, which must name
// the real port, is known before the provider is built.

function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > limit) {
        reject(new Error("request body too large"));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

let providerCallback;
let tokenPath;

async function onProviderRequest(req, res) {
  if (req.method !== "POST" || new URL(req.url, "http://x").pathname !== tokenPath) {
    providerCallback(req, res);
    return;
  }
  let body;
  try {
    body = await readBody(req, MAX_TOKEN_BODY);
  } catch (e) {
    process.stderr.write(`oauth_server: ${e.message}\n`);
    return;
  }
  record(req, body);
  try {
    if (!(await applyFault(takeFault(), req, res))) return;
  } catch (e) {
    // A fault the control listener let through but Node cannot send (e.g. a bad header).
    process.stderr.write(`oauth_server: fault failed: ${e.stack}\n`);
    res.destroy();
    return;
  }
  // The body is consumed, so hand it to oidc-provider the way an upstream body parser would:
  // it reads req.body when the stream is no longer readable (and says so once on stderr).
  req.body = body;
  providerCallback(req, res);
}

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port ?? 0, "127.0.0.1", () => resolve(server.address().port));
  });
}

function tlsServer(certPath, keyPath) {
  return https.createServer(
    { cert: readFileSync(certPath), key: readFileSync(keyPath) },
    onProviderRequest,
  );
}

const mainServer = config.cert
  ? tlsServer(config.cert, config.key)
  : http.createServer(onProviderRequest);
const port = await listen(mainServer, config.port);
const untrustedServer = config.untrusted_cert
  ? tlsServer(config.untrusted_cert, config.untrusted_key)
  : undefined;
const untrustedPort = untrustedServer ? await listen(untrustedServer, config.untrusted_port) : null;

const issuer = `${config.cert ? "https" : "http"}://127.0.0.1:${port}`;

// ---------------------------------------------------------------------------------------------
// The provider.

// oidc-provider signs nothing the broker sees (tokens are opaque), but it refuses to run
// without keys except in development mode; fresh ones per run keep it quiet and self-contained.
const signingKey = generateKeyPairSync("ec", { namedCurve: "P-256" })
  .privateKey.export({ format: "jwk" });

const provider = new Provider(issuer, {
  adapter: MemoryAdapter,
  jwks: { keys: [{ ...signingKey, kid: "oauth-server", use: "sig", alg: "ES256" }] },
  cookies: { keys: [randomBytes(32).toString("base64url")] },
  // Client metadata is validated against the provider's keys; RS256, the default, has none.
  clientDefaults: { id_token_signed_response_alg: "ES256" },
  // A client may only register scopes the server knows: every scope some client registered.
  scopes: [...new Set(config.clients.flatMap((c) => (c.scope ? c.scope.split(" ") : [])))],
  clientAuthMethods: ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
  enabledJWA: {
    // The broker signs client assertions with whichever of these its key is (Ed25519 first).
    clientAuthSigningAlgValues: ["EdDSA", "Ed25519", "ES256", "RS256"],
  },
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
  },
  ttl: {
    ClientCredentials: () => accessTokenTtl,
  },
  extraTokenClaims: tokenRecord,
});

// Errors the provider turns into responses are expected (that is what the tests provoke);
// only its own failures are worth a line on stderr.
provider.on("server_error", (ctx, err) => {
  process.stderr.write(`oauth_server: server_error: ${err.stack || err}\n`);
});

// Every grant takes audience and resource, each possibly repeated (RFC 8693 §2.1, RFC 8707).
const TARGET_PARAMS = ["audience", "resource"];

const builtinClientCredentials = instance(provider).grantTypeHandlers.get("client_credentials");
provider.registerGrantType("client_credentials", (ctx) => {
  strictScope(ctx.oidc.client, ctx.oidc.params.scope);
  takeTargets(ctx);
  return builtinClientCredentials(ctx);
}, ["scope", ...TARGET_PARAMS], TARGET_PARAMS);
provider.registerGrantType(TOKEN_EXCHANGE, tokenExchange, [
  "subject_token", "subject_token_type", "actor_token", "actor_token_type",
  "requested_token_type", "scope", ...TARGET_PARAMS,
], TARGET_PARAMS);
provider.registerGrantType(JWT_BEARER, jwtBearer, ["assertion", "scope", ...TARGET_PARAMS],
  TARGET_PARAMS);

tokenPath = provider.pathFor("token");
providerCallback = provider.callback();

// ---------------------------------------------------------------------------------------------
// Control listener.

async function introspect(value) {
  const token = value ? await provider.ClientCredentials.find(value) : undefined;
  if (!token) return { active: false };
  return {
    active: true,
    sub: token.extra.sub,
    client_id: token.clientId,
    scope: token.scope ?? null,
    aud: token.extra.aud ?? null,
    grant_type: token.extra.grant_type,
    exp: token.exp,
  };
}

async function onControl(req, res) {
  const url = new URL(req.url, "http://x");
  const route = `${req.method} ${url.pathname}`;
  try {
    const raw = (await readBody(req, 1 << 16)).toString("utf8");
    const body = raw ? JSON.parse(raw) : {};
    switch (route) {
      case "GET /stats":
        return sendJson(res, 200, stats);
      case "POST /reset":
        Object.assign(stats, newStats());
        fault = { mode: "none" };
        return sendJson(res, 200, { ok: true });
      case "POST /fault":
        if (!FAULT_MODES.has(body.mode)) {
          return sendJson(res, 400, { error: `unknown fault mode ${body.mode}` });
        }
        if (body.status !== undefined
            && !(Number.isInteger(body.status) && body.status >= 200 && body.status <= 599)) {
          return sendJson(res, 400, { error: "status must be an HTTP status from 200 to 599" });
        }
        fault = { ...body };
        return sendJson(res, 200, { ok: true, fault });
      case "POST /ttl":
        if (!Number.isInteger(body.seconds) || body.seconds <= 0) {
          return sendJson(res, 400, { error: "seconds must be a positive integer" });
        }
        accessTokenTtl = body.seconds;
        return sendJson(res, 200, { ok: true, seconds: accessTokenTtl });
      case "GET /introspect":
        return sendJson(res, 200, await introspect(url.searchParams.get("token")));
      default:
        return sendJson(res, 404, { error: `no such control route ${route}` });
    }
  } catch (e) {
    return sendJson(res, 400, { error: e.message });
  }
}

const controlServer = http.createServer(onControl);
const controlPort = await listen(controlServer, config.control_port);

for (const signal of ["SIGTERM", "SIGINT"]) {
  // Open keep-alive connections would hold a graceful close open; there is nothing to save.
  process.on(signal, () => process.exit(0));
}

process.stdout.write(`${JSON.stringify({
  ready: true,
  issuer,
  token_endpoint: `${issuer}${tokenPath}`,
  port,
  untrusted_port: untrustedPort,
  control_port: controlPort,
})}\n`);
