// Loopback stand-ins for the cloud services that take brokerd's JWTs as federated identities,
// so that the clouds' official SDKs can be run against them unchanged. Each one verifies the
// broker's JWT against the broker's JWKS file (read afresh on every request, so that a key
// rotation is seen at once) and answers in the shapes its provider documents:
//
// The https listeners speak HTTP/2 and HTTP/1.1 (ALPN): the Bedrock Runtime client only speaks h2,
// so it needs "aws_tls"; the plain "aws" listener is HTTP/1.1 only.
//
// AWS (plain http listener "aws", and the same on https as "aws_tls")
//   STS, awsQuery protocol (form POST to /, XML replies, namespace below):
//     https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html
//     https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html
//     https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html
//     https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_providers_create_oidc.html
//       (the OIDC token: RS256 or ES256 only, iss = the provider URL, aud = a client ID)
//   Signature Version 4, verified in full (canonical request, string to sign, signing key):
//     https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
//   Bedrock Runtime InvokeModel (restJson1, POST /model/{modelId}/invoke, SigV4 service bedrock):
//     https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_InvokeModel.html
//     https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-anthropic-claude-messages.html
// Google (https listener "google": sts, iamcredentials and aiplatform on one host)
//   STS token exchange:
//     https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token
//     https://cloud.google.com/iam/docs/workload-identity-federation-with-other-providers
//       (default allowed audience, RS256/ES256, google.subject <= 127 bytes)
//   IAM Credentials generateAccessToken:
//     https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken
//   Vertex AI generateContent:
//     https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.publishers.models/generateContent
//   Error bodies: https://cloud.google.com/apis/design/errors
// Microsoft Entra ID v2.0 (https listener "entra"; MSAL insists on https)
//   https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc (discovery document)
//   https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
//     (client_credentials with a client_assertion; the success and error bodies)
//   https://learn.microsoft.com/entra/workload-id/workload-identity-federation
//     (federated credentials: issuer, subject, audience api://AzureADTokenExchange; RS256)
//   https://learn.microsoft.com/entra/identity-platform/reference-error-codes (AADSTS codes)
//
// A plain-http control listener on loopback serves GET /stats, POST /reset, POST /fault,
// POST /ttl and GET /introspect (see ../cloud.py, which documents the config and the API).
//
// Usage: node cloud_server.mjs CONFIG.json
// Prints one JSON "ready" line on stdout once every listener is up; logs to stderr only.
import { readFileSync } from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import crypto from "node:crypto";

import {
  createLocalJWKSet, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, jwtVerify,
  SignJWT,
} from "jose";

const MAX_BODY = 1 << 20;
const MAX_CONTROL_BODY = 1 << 16;
// Issued credentials are kept until they expire; past this many the oldest go first, so that a
// test hammering the server cannot make it grow without bound.
const MAX_ISSUED = 20000;
const CLOCK_TOLERANCE = 5;

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const awsConf = {
  audience: "sts.amazonaws.com",
  account_id: "123456789012",
  roles: null,
  max_session_duration: 3600,
  ...(config.aws || {}),
};
const googleConf = {
  providers: [],
  service_accounts: [],
  vertex_accepts_federated: true,
  ...(config.google || {}),
};
const entraConf = { tenant_id: "", applications: [], ...(config.entra || {}) };
const ttlOverride = {}; // POST /ttl: aws | google_sts | google_iam | entra -> seconds

const AWS_NS = "https://sts.amazonaws.com/doc/2011-06-15/";
const AWS_VERSION = "2011-06-15";
const TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token";
const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
const GOOGLE_SUBJECT_TYPES = new Set([
  "urn:ietf:params:oauth:token-type:jwt",
  "urn:ietf:params:oauth:token-type:id_token",
]);
const JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const ENTRA_DEFAULT_AUDIENCE = "api://AzureADTokenExchange";

// ---------------------------------------------------------------------------------------------
// Broker keys and JWT checks.

// The JWKS, or null when the file cannot be read: the provider cannot reach the issuer's keys
// (broker not started yet, or a half-written file), and no key verifies, which is the truth.
function brokerJwks() {
  try {
    const jwks = JSON.parse(readFileSync(config.broker_jwks, "utf8"));
    if (!jwks || !Array.isArray(jwks.keys)) throw new Error("no keys array");
    return jwks;
  } catch (e) {
    process.stderr.write(`cloud_server: broker JWKS unreadable: ${e.message}\n`);
    return null;
  }
}

class JwksUnreadable extends Error {
  code = "ERR_BROKER_JWKS_UNREADABLE";
}

// Header and claims of a JWT without verifying it, or null if it is not a JWS compact JWT.
function peekJwt(token) {
  try {
    return { header: decodeProtectedHeader(token), claims: decodeJwt(token) };
  } catch {
    return null;
  }
}

// Verifies a broker JWT; throws jose's error (with .code) on any failure.
async function verifyBrokerJwt(token, { issuer, audience, algorithms, requiredClaims }) {
  const jwks = brokerJwks();
  if (!jwks) throw new JwksUnreadable("the broker's JWKS could not be read");
  const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(jwks), {
    issuer,
    audience,
    algorithms,
    requiredClaims: requiredClaims ?? ["exp", "sub"],
    clockTolerance: CLOCK_TOLERANCE,
  });
  return { claims: payload, header: protectedHeader };
}

function recordJwt(provider, peek) {
  if (!peek) return;
  stats.last_jwt[provider] = peek;
  stats.last_jwt_claims = peek.claims;
}

// ---------------------------------------------------------------------------------------------
// Stats, faults, issued credentials.

function newStats() {
  return {
    requests: {},     // target -> requests that reached it (faulted ones included)
    by_action: {},    // action -> requests
    ok: {},           // action -> successful replies
    errors: {},       // action -> { error code -> count }
    last_error: null, // { action, status, code, message }
    last_user_agent: {},
    last_jwt: {},     // aws | google | entra -> { header, claims } of the last JWT presented
    last_jwt_claims: null,
    last_role_session_name: null,
    last_role_arn: null,
    last_duration_seconds: null,
    last_sigv4: null, // { access_key_id, date, region, service, signed_headers }
    last_caller_arn: null,
    last_bedrock: null,
    last_google_sts: null,
    last_google_iam: null,
    last_vertex: null,
    last_entra: null,
  };
}

let stats = newStats();
let faults = new Map(); // target or "*" -> fault
const issued = new Map(); // AWS access key id or bearer token -> record

function bump(map, key) {
  map[key] = (map[key] ?? 0) + 1;
}

function countOk(action) {
  bump(stats.ok, action);
}

function countError(action, status, code, message) {
  stats.errors[action] ??= {};
  bump(stats.errors[action], code);
  stats.last_error = { action, status, code, message };
}

function remember(key, record) {
  const now = Date.now();
  if (issued.size >= MAX_ISSUED) {
    for (const [k, v] of issued) {
      if (v.expires_at <= now || issued.size >= MAX_ISSUED) issued.delete(k);
      else break;
    }
  }
  issued.set(key, record);
}

function lookup(key, kinds) {
  const record = issued.get(key);
  if (!record || !kinds.includes(record.kind)) return null;
  return record;
}

function ttlFor(kind, requested) {
  return ttlOverride[kind] ?? requested;
}

const TARGETS = new Set([
  "aws_sts", "bedrock", "google_sts", "google_iam", "vertex", "entra_token", "entra_discovery",
]);
const FAULT_MODES = new Set(["none", "status", "slow", "malformed", "close", "oversize"]);

function takeFault(target) {
  for (const key of [target, "*"]) {
    const f = faults.get(key);
    if (!f) continue;
    if (f.count !== undefined) {
      f.count -= 1;
      if (f.count <= 0) faults.delete(key);
    }
    return f;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// HTTP plumbing.

function randomId(n, alphabet) {
  const bytes = crypto.randomBytes(n);
  let s = "";
  for (const b of bytes) s += alphabet[b % alphabet.length];
  return s;
}
const UPPER_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const B64ISH = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

function isoSeconds(ms) {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

// The https listeners speak HTTP/2 as well as HTTP/1.1 (the Bedrock client only speaks h2);
// Node's compatibility API gives both the same req/res, with req.stream set for HTTP/2.
function isH2(req) {
  return req.httpVersionMajor === 2;
}

function gone(req, res) {
  return isH2(req) ? req.stream.destroyed : res.destroyed || req.socket.destroyed;
}

function hangUp(req) {
  if (isH2(req)) req.stream.session?.destroy();
  else req.socket.destroy();
}

function send(res, status, body, headers = {}) {
  if (res.headersSent || res.destroyed || res.stream?.destroyed) return;
  const data = Buffer.isBuffer(body) ? body : Buffer.from(body);
  const all = { "content-length": data.length, ...headers };
  // Connection-specific headers are forbidden in HTTP/2.
  if (res.stream) delete all.connection;
  res.writeHead(status, all);
  res.end(data);
}

function sendJson(res, status, body, headers = {}) {
  send(res, status, typeof body === "string" ? body : JSON.stringify(body), {
    "content-type": "application/json; charset=utf-8",
    "cache-control": "no-store",
    ...headers,
  });
}

class BodyTooLarge extends Error {}

// Beyond this a too-large body is not even drained: the connection is cut.
const MAX_DRAIN = 64 << 20;

// Reads a request body of at most `limit` bytes. A larger one is read to its end and dropped
// (nothing past the limit is kept), then refused with BodyTooLarge, so that the client gets the
// 413 rather than a reset in the middle of sending.
function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"]);
    if (Number.isFinite(declared) && declared > MAX_DRAIN) {
      hangUp(req);
      reject(new Error(`request body of ${declared} bytes refused`));
      return;
    }
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > MAX_DRAIN) {
        hangUp(req);
        reject(new Error("request body too large to drain"));
      } else if (size <= limit) {
        chunks.push(chunk);
      } else {
        chunks.length = 0;
      }
    });
    req.on("end", () => {
      if (size > limit) reject(new BodyTooLarge(`request body of ${size} bytes is over ${limit}`));
      else resolve(Buffer.concat(chunks));
    });
    req.on("error", reject);
  });
}

function parseForm(buf) {
  return new URLSearchParams(buf.toString("utf8"));
}

function parseJsonBody(buf) {
  if (buf.length === 0) return undefined;
  return JSON.parse(buf.toString("utf8"));
}

// What a misbehaving server would send instead of the real answer, per target.
function faultContentType(target) {
  return target === "aws_sts" ? "text/xml" : "application/json";
}

function defaultFaultBody(target, status) {
  switch (target) {
    case "aws_sts":
      return awsErrorXml(status >= 500 ? "Receiver" : "Sender",
        { 400: "Throttling", 429: "Throttling", 500: "InternalFailure" }[status]
          ?? "ServiceUnavailable",
        "injected fault", crypto.randomUUID());
    case "bedrock":
      return JSON.stringify({ message: "injected fault" });
    case "google_sts":
      return JSON.stringify({ error: "server_error", error_description: "injected fault" });
    case "google_iam":
    case "vertex":
      return JSON.stringify(googleErrorBody(status, "UNAVAILABLE", "injected fault"));
    default:
      return JSON.stringify({ error: "temporarily_unavailable",
        error_description: "AADSTS90033: injected fault" });
  }
}

function oversizeBody(target, size) {
  if (target === "aws_sts") {
    const head = `<?xml version="1.0"?><!-- `;
    const tail = " -->";
    return head + "x".repeat(Math.max(0, size - head.length - tail.length)) + tail;
  }
  const head = '{"pad":"';
  const tail = '"}';
  return head + "x".repeat(Math.max(0, size - head.length - tail.length)) + tail;
}

// Applies an injected fault; returns true when the request should still be handled.
async function applyFault(f, target, req, res) {
  if (!f) return true;
  switch (f.mode) {
    case "status": {
      const status = f.status ?? 500;
      const body = f.body === undefined ? defaultFaultBody(target, status)
        : typeof f.body === "string" ? f.body : JSON.stringify(f.body);
      const headers = { "content-type": faultContentType(target), ...(f.headers || {}) };
      if (target === "bedrock" && f.body === undefined) {
        headers["x-amzn-errortype"] = status === 429 ? "ThrottlingException"
          : "ServiceUnavailableException";
      }
      send(res, status, body, headers);
      return false;
    }
    case "slow":
      await new Promise((resolve) => setTimeout(resolve, f.delay_ms ?? 5000));
      return !gone(req, res);
    case "malformed":
      send(res, 200, target === "aws_sts" ? "<AssumeRoleWithWebIdentityResponse><Assum"
        : '{"access_token": "abc", ', { "content-type": faultContentType(target) });
      return false;
    case "oversize":
      send(res, 200, oversizeBody(target, f.size ?? 200000),
        { "content-type": faultContentType(target) });
      return false;
    case "close":
      hangUp(req);
      return false;
    default:
      return true;
  }
}

// An error a handler throws to answer with; `send` writes it in the provider's shape.
class Reply extends Error {
  constructor(status, code, message, send) {
    super(message);
    this.status = status;
    this.code = code;
    this.send = send;
  }
}

// Wraps a listener's router: reads the body (bounded), counts, applies faults, answers errors.
// router(req, url) returns { target, action, handler, actionFromBody? } or null (notFound).
function makeHandler(name, router, notFound) {
  return async (req, res) => {
    let url;
    try {
      url = new URL(req.url, "http://x");
    } catch {
      send(res, 400, "bad request target\n", { "content-type": "text/plain" });
      return;
    }
    const route = router(req, url);
    if (!route) {
      notFound(req, res, url);
      return;
    }
    const { target } = route;
    let { action } = route;
    bump(stats.requests, target);
    if (req.headers["user-agent"] !== undefined) {
      stats.last_user_agent[target] = req.headers["user-agent"];
    }
    let body;
    try {
      body = await readBody(req, MAX_BODY);
    } catch (e) {
      if (e instanceof BodyTooLarge) {
        bump(stats.by_action, action);
        countError(action, 413, "RequestEntityTooLarge", e.message);
        send(res, 413, `${e.message}\n`, { "content-type": "text/plain" });
      } else {
        process.stderr.write(`cloud_server: ${name}: reading request: ${e.message}\n`);
        hangUp(req);
      }
      return;
    }
    if (route.actionFromBody) action = route.actionFromBody(body, url) ?? action;
    bump(stats.by_action, action);
    try {
      if (!(await applyFault(takeFault(target), target, req, res))) return;
    } catch (e) {
      process.stderr.write(`cloud_server: fault failed: ${e.stack}\n`);
      hangUp(req);
      return;
    }
    try {
      await route.handler(req, res, body, url, action);
      countOk(action);
    } catch (e) {
      if (e instanceof Reply) {
        countError(action, e.status, e.code, e.message);
        e.send(res);
        return;
      }
      process.stderr.write(`cloud_server: ${name}: ${action}: internal error: ${e.stack}\n`);
      countError(action, 500, "InternalError", String(e.message));
      send(res, 500, `internal error: ${e.message}\n`, { "content-type": "text/plain" });
    }
  };
}

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port ?? 0, "127.0.0.1", () => resolve(server.address().port));
  });
}

// ---------------------------------------------------------------------------------------------
// AWS: errors.

function xmlEscape(s) {
  return String(s).replace(/[<>&'"]/g, (c) => ({
    "<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&apos;", '"': "&quot;",
  }[c]));
}

function awsErrorXml(type, code, message, requestId) {
  return `<ErrorResponse xmlns="${AWS_NS}">\n  <Error>\n    <Type>${type}</Type>\n`
    + `    <Code>${xmlEscape(code)}</Code>\n    <Message>${xmlEscape(message)}</Message>\n`
    + `  </Error>\n  <RequestId>${requestId}</RequestId>\n</ErrorResponse>\n`;
}

function stsError(status, code, message, type = status >= 500 ? "Receiver" : "Sender") {
  return new Reply(status, code, message, (res) => {
    const requestId = crypto.randomUUID();
    send(res, status, awsErrorXml(type, code, message, requestId),
      { "content-type": "text/xml", "x-amzn-requestid": requestId });
  });
}

// restJson1 errors, as Bedrock sends them: the type in x-amzn-ErrorType, {"message"} in the body.
function bedrockError(status, code, message) {
  return new Reply(status, code, message, (res) => {
    sendJson(res, status, { message }, {
      "x-amzn-errortype": `${code}:http://internal.amazon.com/coral/com.amazon.bedrock/`,
      "x-amzn-requestid": crypto.randomUUID(),
    });
  });
}

function validationMessage(value, member, constraint) {
  const shown = value === null ? "null" : `'${value}'`;
  return `1 validation error detected: Value ${shown} at '${member}' failed to satisfy `
    + `constraint: Member must ${constraint}`;
}

// ---------------------------------------------------------------------------------------------
// AWS: Signature Version 4.

// RFC 3986 unreserved characters stay; everything else is %XX (UTF-8), as SigV4 requires.
function awsUriEncode(s) {
  return encodeURIComponent(s).replace(/[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function safeDecodeComponent(s) {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

// Non-S3 services: the path as sent (already encoded once) is normalized and encoded again.
function canonicalUri(rawPath) {
  const segments = [];
  for (const seg of rawPath.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") segments.pop();
    else segments.push(seg);
  }
  const path = `/${segments.join("/")}${segments.length && rawPath.endsWith("/") ? "/" : ""}`;
  return awsUriEncode(path).replace(/%2F/g, "/");
}

function canonicalQuery(rawQuery) {
  if (!rawQuery) return "";
  const pairs = [];
  for (const part of rawQuery.split("&")) {
    if (!part) continue;
    const eq = part.indexOf("=");
    const k = safeDecodeComponent(eq < 0 ? part : part.slice(0, eq));
    const v = eq < 0 ? "" : safeDecodeComponent(part.slice(eq + 1));
    if (k === "X-Amz-Signature") continue;
    pairs.push([awsUriEncode(k), awsUriEncode(v)]);
  }
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return pairs.map(([k, v]) => `${k}=${v}`).join("&");
}

function rawHeaderValues(req) {
  const map = new Map();
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i].toLowerCase();
    const value = req.rawHeaders[i + 1].replace(/[\r\n]/g, " ").replace(/[ \t]+/g, " ").trim();
    if (!map.has(name)) map.set(name, []);
    map.get(name).push(value);
  }
  // HTTP/2 carries Host as :authority; a signer may have signed either name.
  if (!map.has("host") && map.has(":authority")) map.set("host", map.get(":authority"));
  return map;
}

function hmac(key, data) {
  return crypto.createHmac("sha256", key).update(data).digest();
}

function sha256Hex(data) {
  return crypto.createHash("sha256").update(data).digest("hex");
}

const AMZ_DATE = /^(\d{8})T\d{6}Z$/;
const MAX_SKEW_MS = 15 * 60 * 1000;

function amzDateMs(value) {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value);
  if (!m) return NaN;
  return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
}

// Verifies the request's SigV4 signature for `service` with credentials this server issued;
// returns the credential record. `err(kind, message)` builds the service's error for:
// missing | incomplete | invalid_token | expired | signature | skew.
function verifySigV4(req, url, body, service, err) {
  const auth = req.headers.authorization;
  if (!auth) {
    if (url.searchParams.has("X-Amz-Signature")) {
      throw err("incomplete", "presigned (query string) requests are not supported here");
    }
    throw err("missing", "Request is missing Authentication Token");
  }
  const m = /^AWS4-HMAC-SHA256\s+(.*)$/s.exec(auth);
  if (!m) {
    throw err("incomplete", `Authorization header requires AWS4-HMAC-SHA256: ${auth.slice(0, 40)}`);
  }
  const fields = {};
  for (const part of m[1].split(",")) {
    const eq = part.indexOf("=");
    if (eq > 0) fields[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  for (const name of ["Credential", "SignedHeaders", "Signature"]) {
    if (!fields[name]) {
      throw err("incomplete", `Authorization header requires '${name}' parameter. `
        + `Authorization=${auth.slice(0, 80)}`);
    }
  }
  const scopeParts = fields.Credential.split("/");
  if (scopeParts.length !== 5 || scopeParts[4] !== "aws4_request") {
    throw err("incomplete", `Credential should be scoped to a valid region, not '${fields.Credential}'.`);
  }
  const [accessKeyId, date, region, scopeService] = scopeParts;
  const amzDate = req.headers["x-amz-date"];
  if (!amzDate || !AMZ_DATE.test(amzDate)) {
    throw err("incomplete", "Authorization header requires existence of either a 'X-Amz-Date' "
      + "or a 'Date' header.");
  }
  if (amzDate.slice(0, 8) !== date) {
    throw err("signature", `Date in Credential scope does not match YYYYMMDD from ISO-8601 `
      + `version of date from HTTP: '${date}' != '${amzDate.slice(0, 8)}', from '${amzDate}'.`);
  }
  if (scopeService !== service) {
    throw err("signature", `Credential should be scoped to correct service: '${service}'. `);
  }
  if (!region) throw err("signature", "Credential should be scoped to a valid region.");
  const signedHeaders = fields.SignedHeaders.split(";");
  stats.last_sigv4 = {
    access_key_id: accessKeyId, date, region, service: scopeService, signed_headers: signedHeaders,
  };
  if (!signedHeaders.includes("host") && !signedHeaders.includes(":authority")) {
    throw err("signature", "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.");
  }
  if (!signedHeaders.includes("x-amz-date")) {
    throw err("signature", "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.");
  }

  const record = lookup(accessKeyId, ["aws"]);
  if (!record) throw err("invalid_token", "The security token included in the request is invalid.");
  const sessionToken = req.headers["x-amz-security-token"];
  if (sessionToken !== record.session_token) {
    throw err("invalid_token", "The security token included in the request is invalid.");
  }
  if (record.expires_at <= Date.now()) {
    throw err("expired", "The security token included in the request is expired");
  }
  const now = Date.now();
  const when = amzDateMs(amzDate);
  if (!(Math.abs(now - when) <= MAX_SKEW_MS)) {
    throw err("skew", `Signature expired: ${amzDate} is now earlier than `
      + `${isoSeconds(now - MAX_SKEW_MS).replace(/[-:]/g, "")} `
      + `(${isoSeconds(now).replace(/[-:]/g, "")} - 15 min.)`);
  }

  const payloadHash = sha256Hex(body);
  const declaredHash = req.headers["x-amz-content-sha256"];
  if (declaredHash !== undefined && declaredHash !== payloadHash) {
    throw err("signature", "The provided 'x-amz-content-sha256' header does not match what was computed.");
  }
  const headerValues = rawHeaderValues(req);
  const canonicalHeaders = signedHeaders.map((name) => {
    const values = headerValues.get(name);
    if (!values) throw err("signature", `The signed header '${name}' is missing from the request.`);
    return `${name}:${values.join(",")}\n`;
  }).join("");
  const rawTarget = req.url;
  const q = rawTarget.indexOf("?");
  const rawPath = q < 0 ? rawTarget : rawTarget.slice(0, q);
  const rawQuery = q < 0 ? "" : rawTarget.slice(q + 1);
  const canonicalRequest = [
    req.method, canonicalUri(rawPath), canonicalQuery(rawQuery), canonicalHeaders,
    signedHeaders.join(";"), payloadHash,
  ].join("\n");
  const scope = `${date}/${region}/${service}/aws4_request`;
  const stringToSign = `AWS4-HMAC-SHA256\n${amzDate}\n${scope}\n${sha256Hex(canonicalRequest)}`;
  let key = hmac(`AWS4${record.secret_access_key}`, date);
  key = hmac(key, region);
  key = hmac(key, service);
  key = hmac(key, "aws4_request");
  const expected = hmac(key, stringToSign);
  const given = /^[0-9a-f]{64}$/.test(fields.Signature) ? Buffer.from(fields.Signature, "hex") : null;
  if (!given || !crypto.timingSafeEqual(given, expected)) {
    throw err("signature", "The request signature we calculated does not match the signature "
      + "you provided. Check your AWS Secret Access Key and signing method. Consult the service "
      + "documentation for details.\n\nThe Canonical String for this request should have been\n'"
      + `${canonicalRequest}'\n\nThe String-to-Sign should have been\n'${stringToSign}'\n`);
  }
  return record;
}

function stsSigErr(kind, message) {
  switch (kind) {
    case "missing": return stsError(403, "MissingAuthenticationToken", message);
    case "incomplete": return stsError(400, "IncompleteSignature", message);
    case "invalid_token": return stsError(403, "InvalidClientTokenId", message);
    case "expired": return stsError(400, "ExpiredToken", message);
    default: return stsError(403, "SignatureDoesNotMatch", message);
  }
}

function bedrockSigErr(kind, message) {
  switch (kind) {
    case "missing": return bedrockError(403, "MissingAuthenticationTokenException", message);
    case "incomplete": return bedrockError(403, "IncompleteSignatureException", message);
    case "invalid_token": return bedrockError(403, "UnrecognizedClientException", message);
    case "expired": return bedrockError(403, "ExpiredTokenException", message);
    default: return bedrockError(403, "InvalidSignatureException", message);
  }
}

// ---------------------------------------------------------------------------------------------
// AWS STS.

const ROLE_ARN = /^arn:(aws[a-z-]*):iam::(\d{12}):role\/((?:[\w+=,.@-]+\/)*)([\w+=,.@-]{1,64})$/;
const SESSION_NAME = /^[\w+=,.@-]{2,64}$/;

function stsParams(req, url, body) {
  const params = new URLSearchParams(url.search);
  const type = (req.headers["content-type"] || "").split(";")[0].trim().toLowerCase();
  if (req.method === "POST" && (type === "application/x-www-form-urlencoded" || type === "")) {
    for (const [k, v] of parseForm(body)) params.append(k, v);
  }
  return params;
}

function stsActionOf(req, url, body) {
  try {
    const action = stsParams(req, url, body).get("Action");
    return action && /^[A-Za-z]{1,64}$/.test(action) ? action : null;
  } catch {
    return null;
  }
}

function stsReply(res, action, result) {
  const requestId = crypto.randomUUID();
  const xml = `<${action}Response xmlns="${AWS_NS}">\n  <${action}Result>\n${result}`
    + `  </${action}Result>\n  <ResponseMetadata>\n    <RequestId>${requestId}</RequestId>\n`
    + `  </ResponseMetadata>\n</${action}Response>\n`;
  send(res, 200, xml, { "content-type": "text/xml", "x-amzn-requestid": requestId });
}

function roleIdOf(roleArn) {
  const digest = crypto.createHash("sha256").update(roleArn).digest();
  let id = "AROA";
  for (let i = 0; i < 17; i += 1) id += UPPER_ALNUM[digest[i] % UPPER_ALNUM.length];
  return id;
}

async function awsSts(req, res, body, url) {
  const params = stsParams(req, url, body);
  const action = params.get("Action");
  if (!action) throw stsError(400, "MissingAction", "Missing Action");
  const version = params.get("Version");
  if (version !== AWS_VERSION) {
    throw stsError(400, "InvalidAction",
      `Could not find operation ${action} for version ${version ?? "NO_VERSION_SPECIFIED"}`);
  }
  switch (action) {
    case "AssumeRoleWithWebIdentity":
      return assumeRoleWithWebIdentity(res, params);
    case "GetCallerIdentity":
      return getCallerIdentity(req, res, body, url);
    default:
      throw stsError(400, "InvalidAction",
        `Could not find operation ${action} for version ${AWS_VERSION}`);
  }
}

function awsTokenError(e, claims) {
  switch (e.code) {
    case "ERR_JWT_EXPIRED":
      return stsError(400, "ExpiredTokenException",
        `Token expired: current date/time ${Math.floor(Date.now() / 1000)} must be before the `
        + `expiration date/time ${claims?.exp}`);
    case "ERR_JWT_CLAIM_VALIDATION_FAILED":
      if (e.claim === "iss") {
        return stsError(400, "InvalidIdentityToken",
          `No OpenIDConnect provider found in your account for ${claims?.iss}`);
      }
      if (e.claim === "aud") return stsError(400, "InvalidIdentityToken", "Incorrect token audience");
      return stsError(400, "InvalidIdentityToken", `The web identity token is invalid: ${e.message}`);
    case "ERR_JOSE_ALG_NOT_ALLOWED":
      return stsError(400, "InvalidIdentityToken",
        "The web identity token is signed with an unsupported algorithm; "
        + "AWS accepts RS256 and ES256");
    case "ERR_JWKS_NO_MATCHING_KEY":
    case "ERR_JWKS_MULTIPLE_MATCHING_KEYS":
      return stsError(400, "InvalidIdentityToken",
        "Couldn't retrieve verification key from your identity provider, please reference "
        + "AssumeRoleWithWebIdentity documentation for requirements");
    case "ERR_JWS_SIGNATURE_VERIFICATION_FAILED":
      return stsError(400, "InvalidIdentityToken", "Signature verification failed");
    case "ERR_BROKER_JWKS_UNREADABLE":
      return stsError(400, "IDPCommunicationError",
        "Couldn't retrieve verification key from your identity provider");
    default:
      return stsError(400, "InvalidIdentityToken", `The web identity token is invalid: ${e.message}`);
  }
}

async function assumeRoleWithWebIdentity(res, params) {
  const roleArn = params.get("RoleArn");
  const sessionName = params.get("RoleSessionName");
  const token = params.get("WebIdentityToken");
  const durationRaw = params.get("DurationSeconds");
  stats.last_role_session_name = sessionName;
  stats.last_role_arn = roleArn;
  stats.last_duration_seconds = durationRaw === null ? null : durationRaw;
  if (roleArn === null) throw stsError(400, "ValidationError", validationMessage(null, "roleArn", "not be null"));
  if (sessionName === null) {
    throw stsError(400, "ValidationError", validationMessage(null, "roleSessionName", "not be null"));
  }
  if (token === null) {
    throw stsError(400, "ValidationError", validationMessage(null, "webIdentityToken", "not be null"));
  }
  if (!SESSION_NAME.test(sessionName)) {
    throw stsError(400, "ValidationError", validationMessage(sessionName, "roleSessionName",
      sessionName.length < 2 || sessionName.length > 64
        ? "have length between 2 and 64"
        : "satisfy regular expression pattern: [\\w+=,.@-]*"));
  }
  if (roleArn.length < 20 || roleArn.length > 2048) {
    throw stsError(400, "ValidationError", validationMessage(roleArn, "roleArn",
      "have length between 20 and 2048"));
  }
  const arn = ROLE_ARN.exec(roleArn);
  if (!arn) throw stsError(400, "ValidationError", "Request ARN is invalid");
  if (token.length < 4 || token.length > 20000) {
    throw stsError(400, "ValidationError", validationMessage("***", "webIdentityToken",
      "have length between 4 and 20000"));
  }
  let duration = 3600;
  if (durationRaw !== null) {
    if (!/^\d{1,6}$/.test(durationRaw)) {
      throw stsError(400, "ValidationError", validationMessage(durationRaw, "durationSeconds",
        "be an integer"));
    }
    duration = Number(durationRaw);
    if (duration < 900 || duration > 43200) {
      throw stsError(400, "ValidationError", validationMessage(durationRaw, "durationSeconds",
        duration < 900 ? "have value greater than or equal to 900"
          : "have value less than or equal to 43200"));
    }
    if (duration > awsConf.max_session_duration) {
      throw stsError(400, "ValidationError",
        "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.");
    }
  }
  const [, partition, account, , roleName] = arn;
  if (account !== awsConf.account_id) {
    throw stsError(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity");
  }

  const peek = peekJwt(token);
  recordJwt("aws", peek);
  if (!peek) {
    throw stsError(400, "InvalidIdentityToken", "The web identity token is not a valid JWT");
  }
  let claims;
  try {
    ({ claims } = await verifyBrokerJwt(token, {
      issuer: config.broker_issuer,
      audience: awsConf.audience,
      algorithms: ["RS256", "ES256"],
    }));
  } catch (e) {
    throw awsTokenError(e, peek.claims);
  }
  // The role's trust policy, if the test configured one: which subjects may assume it.
  if (awsConf.roles) {
    const role = awsConf.roles.find((r) => r.arn === roleArn);
    if (!role || (role.subjects && !role.subjects.includes(claims.sub))) {
      throw stsError(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity");
    }
  }

  const lifetime = ttlFor("aws", duration);
  const expiresAt = Date.now() + lifetime * 1000;
  const accessKeyId = `ASIA${randomId(16, UPPER_ALNUM)}`;
  const secret = randomId(40, B64ISH);
  const sessionToken = `IQoJb3JpZ2luX2Vj${randomId(300, B64ISH)}`;
  const roleId = roleIdOf(roleArn);
  const assumedArn = `arn:${partition}:sts::${account}:assumed-role/${roleName}/${sessionName}`;
  const audience = Array.isArray(claims.aud) ? awsConf.audience : claims.aud;
  remember(accessKeyId, {
    kind: "aws",
    secret_access_key: secret,
    session_token: sessionToken,
    expires_at: expiresAt,
    arn: assumedArn,
    user_id: `${roleId}:${sessionName}`,
    account,
    role_arn: roleArn,
    session_name: sessionName,
    sub: claims.sub,
  });
  stsReply(res, "AssumeRoleWithWebIdentity",
    `    <SubjectFromWebIdentityToken>${xmlEscape(claims.sub)}</SubjectFromWebIdentityToken>\n`
    + `    <Audience>${xmlEscape(audience)}</Audience>\n`
    + "    <AssumedRoleUser>\n"
    + `      <Arn>${xmlEscape(assumedArn)}</Arn>\n`
    + `      <AssumedRoleId>${roleId}:${xmlEscape(sessionName)}</AssumedRoleId>\n`
    + "    </AssumedRoleUser>\n"
    + "    <Credentials>\n"
    + `      <SessionToken>${sessionToken}</SessionToken>\n`
    + `      <SecretAccessKey>${secret}</SecretAccessKey>\n`
    + `      <Expiration>${isoSeconds(expiresAt)}</Expiration>\n`
    + `      <AccessKeyId>${accessKeyId}</AccessKeyId>\n`
    + "    </Credentials>\n"
    + `    <Provider>${xmlEscape(claims.iss)}</Provider>\n`);
}

async function getCallerIdentity(req, res, body, url) {
  const record = verifySigV4(req, url, body, "sts", stsSigErr);
  stats.last_caller_arn = record.arn;
  stsReply(res, "GetCallerIdentity",
    `    <Arn>${xmlEscape(record.arn)}</Arn>\n`
    + `    <UserId>${xmlEscape(record.user_id)}</UserId>\n`
    + `    <Account>${record.account}</Account>\n`);
}

// ---------------------------------------------------------------------------------------------
// AWS Bedrock Runtime.

const BEDROCK_INVOKE = /^\/model\/([^/]+)\/invoke$/;

function textOfContent(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.filter((c) => c && c.type === "text" && typeof c.text === "string")
      .map((c) => c.text).join("");
  }
  return "";
}

async function bedrockInvoke(req, res, body, url) {
  const m = BEDROCK_INVOKE.exec(url.pathname);
  const record = verifySigV4(req, url, body, "bedrock", bedrockSigErr);
  const modelId = safeDecodeComponent(m[1]);
  if (!/(^|[.:/])anthropic\./.test(modelId)) {
    throw bedrockError(400, "ValidationException", "The provided model identifier is invalid.");
  }
  let request;
  try {
    request = parseJsonBody(body);
  } catch (e) {
    throw bedrockError(400, "ValidationException", `Malformed input request: ${e.message}`);
  }
  const problems = [];
  if (!request || typeof request !== "object" || Array.isArray(request)) {
    problems.push("expected a JSON object");
  } else {
    if (typeof request.anthropic_version !== "string") {
      problems.push("required key [anthropic_version] not found");
    }
    if (!Number.isInteger(request.max_tokens) || request.max_tokens < 1) {
      problems.push("required key [max_tokens] not found");
    }
    if (!Array.isArray(request.messages) || request.messages.length === 0) {
      problems.push("required key [messages] not found");
    }
  }
  if (problems.length) {
    throw bedrockError(400, "ValidationException",
      `Malformed input request: #: ${problems.join(", ")}, please reformat your input and try again.`);
  }
  const last = request.messages[request.messages.length - 1];
  const prompt = textOfContent(last?.content);
  stats.last_bedrock = { model_id: modelId, prompt, caller_arn: record.arn };
  stats.last_caller_arn = record.arn;
  const text = `echo: ${prompt}`;
  const inputTokens = Math.max(1, Math.ceil(prompt.length / 4));
  const outputTokens = Math.max(1, Math.ceil(text.length / 4));
  sendJson(res, 200, {
    id: `msg_bdrk_${randomId(24, B64ISH.slice(0, 62))}`,
    type: "message",
    role: "assistant",
    model: modelId.replace(/^.*anthropic\./, "").replace(/-v\d+:\d+$/, ""),
    content: [{ type: "text", text }],
    stop_reason: "end_turn",
    stop_sequence: null,
    usage: { input_tokens: inputTokens, output_tokens: outputTokens },
  }, {
    "x-amzn-requestid": crypto.randomUUID(),
    "x-amzn-bedrock-invocation-latency": "42",
    "x-amzn-bedrock-input-token-count": String(inputTokens),
    "x-amzn-bedrock-output-token-count": String(outputTokens),
  });
}

function awsRouter(req, url) {
  if (url.pathname === "/" && (req.method === "POST" || req.method === "GET")) {
    return {
      target: "aws_sts",
      action: "sts:unknown",
      handler: awsSts,
      actionFromBody: (body) => stsActionOf(req, url, body),
    };
  }
  if (req.method === "POST" && BEDROCK_INVOKE.test(url.pathname)) {
    return { target: "bedrock", action: "InvokeModel", handler: bedrockInvoke };
  }
  return null;
}

function awsNotFound(req, res, url) {
  if (url.pathname.startsWith("/model/")) {
    sendJson(res, 404, { message: `Unknown operation ${req.method} ${url.pathname}` },
      { "x-amzn-errortype": "UnknownOperationException" });
  } else {
    send(res, 404, awsErrorXml("Sender", "InvalidAction", `no such resource ${url.pathname}`,
      crypto.randomUUID()), { "content-type": "text/xml" });
  }
}

// ---------------------------------------------------------------------------------------------
// Google: STS.

function googleStsError(status, error, description) {
  return new Reply(status, error, description, (res) => {
    sendJson(res, status, { error, error_description: description });
  });
}

const GOOGLE_AUDIENCE = new RegExp("^//iam\\.googleapis\\.com/projects/(\\d+)/locations/global/"
  + "workloadIdentityPools/([a-z0-9-]{4,32})/providers/([a-z0-9-]{4,32})$");

function googleProvider(audience) {
  return googleConf.providers.find((p) => p.name === audience) ?? null;
}

function googleAllowedAudiences(provider) {
  if (provider.allowed_audiences && provider.allowed_audiences.length) {
    return provider.allowed_audiences;
  }
  // No allowed audiences configured: the provider's canonical resource name, with https:
  // (documented) or as given (what GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE holds).
  return [`https:${provider.name}`, provider.name];
}

function googleParams(req, body) {
  const type = (req.headers["content-type"] || "").split(";")[0].trim().toLowerCase();
  if (type === "application/json") {
    let json;
    try {
      json = parseJsonBody(body) ?? {};
    } catch (e) {
      throw googleStsError(400, "invalid_request", `Invalid JSON payload received. ${e.message}`);
    }
    if (typeof json !== "object" || Array.isArray(json)) {
      throw googleStsError(400, "invalid_request", "Invalid JSON payload received.");
    }
    const out = {};
    for (const [k, v] of Object.entries(json)) {
      // The REST reference names the fields in camelCase (JSON) and snake_case (form).
      out[k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)] = typeof v === "string" ? v : JSON.stringify(v);
    }
    return out;
  }
  return Object.fromEntries(parseForm(body));
}

function googleTokenError(e, claims, provider) {
  switch (e.code) {
    case "ERR_JWT_EXPIRED":
      return googleStsError(400, "invalid_grant", "ID Token has expired.");
    case "ERR_JWT_CLAIM_VALIDATION_FAILED":
      if (e.claim === "aud") {
        return googleStsError(400, "invalid_grant",
          `The audience in ID Token [${[claims?.aud].flat().join(", ")}] does not match the `
          + "expected audience.");
      }
      if (e.claim === "iss") {
        return googleStsError(400, "invalid_grant",
          `The issuer in ID Token ${claims?.iss} does not match the expected issuer `
          + `${config.broker_issuer} for provider ${provider.name}.`);
      }
      if (e.claim === "nbf") return googleStsError(400, "invalid_grant", "ID Token is not yet valid.");
      return googleStsError(400, "invalid_grant", `Invalid ID Token: ${e.message}`);
    case "ERR_JOSE_ALG_NOT_ALLOWED":
      return googleStsError(400, "invalid_grant",
        "Invalid ID Token: unsupported signing algorithm; supported: RS256, ES256.");
    case "ERR_JWKS_NO_MATCHING_KEY":
      return googleStsError(400, "invalid_grant",
        "Invalid ID Token: the key ID in the token is not in the provider's JWKS.");
    case "ERR_JWS_SIGNATURE_VERIFICATION_FAILED":
      return googleStsError(400, "invalid_grant", "Invalid JWT signature.");
    default:
      return googleStsError(400, "invalid_grant", `Invalid ID Token: ${e.message}`);
  }
}

async function googleSts(req, res, body) {
  const p = googleParams(req, body);
  stats.last_google_sts = {
    grant_type: p.grant_type ?? null,
    audience: p.audience ?? null,
    scope: p.scope ?? null,
    requested_token_type: p.requested_token_type ?? null,
    subject_token_type: p.subject_token_type ?? null,
    options: p.options ?? null,
  };
  if (p.grant_type !== TOKEN_EXCHANGE) {
    throw googleStsError(400, "unsupported_grant_type",
      `Invalid value for "grant_type": expected ${TOKEN_EXCHANGE}.`);
  }
  if (!p.audience || !GOOGLE_AUDIENCE.test(p.audience)) {
    throw googleStsError(400, "invalid_request",
      "Invalid value for \"audience\". This value should be the full resource name of the "
      + "Identity Provider. See https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token "
      + "for the list of possible formats.");
  }
  if (p.requested_token_type !== TYPE_ACCESS_TOKEN) {
    throw googleStsError(400, "invalid_request",
      `Invalid value for "requested_token_type": expected ${TYPE_ACCESS_TOKEN}.`);
  }
  if (!GOOGLE_SUBJECT_TYPES.has(p.subject_token_type)) {
    throw googleStsError(400, "invalid_request",
      "Invalid value for \"subject_token_type\". Supported values for OIDC providers are "
      + "urn:ietf:params:oauth:token-type:jwt and urn:ietf:params:oauth:token-type:id_token.");
  }
  if (!p.subject_token) {
    throw googleStsError(400, "invalid_request", "Missing required parameter: \"subject_token\".");
  }
  const provider = googleProvider(p.audience);
  if (!provider) {
    throw googleStsError(400, "invalid_target",
      "The target service indicated by the \"audience\" parameters is invalid. This might either "
      + "be because the pool or provider is disabled or deleted or because it doesn't exist.");
  }
  const peek = peekJwt(p.subject_token);
  recordJwt("google", peek);
  if (!peek) throw googleStsError(400, "invalid_grant", "Unable to parse the ID Token.");
  let claims;
  try {
    ({ claims } = await verifyBrokerJwt(p.subject_token, {
      issuer: provider.issuer ?? config.broker_issuer,
      audience: googleAllowedAudiences(provider),
      algorithms: ["RS256", "ES256"],
      requiredClaims: ["exp", "iat", "sub"],
    }));
  } catch (e) {
    throw googleTokenError(e, peek.claims, provider);
  }
  if (claims.exp - claims.iat > 86400) {
    throw googleStsError(400, "invalid_grant",
      "The lifetime of the ID Token (exp - iat) must not exceed 24 hours.");
  }
  if (Buffer.byteLength(String(claims.sub)) > 127) {
    throw googleStsError(400, "invalid_grant",
      "The size of mapped attribute google.subject exceeds the 127 bytes limit. Either modify "
      + "your attribute mapping or the incoming assertion to produce a mapped attribute that is "
      + "less than 127 bytes.");
  }
  const [, projectNumber, pool] = GOOGLE_AUDIENCE.exec(p.audience);
  const lifetime = ttlFor("google_sts", 3600);
  const token = `ya29.d.sts-${randomId(60, B64ISH.slice(0, 62))}`;
  remember(token, {
    kind: "google_sts",
    expires_at: Date.now() + lifetime * 1000,
    sub: claims.sub,
    principal: `principal://iam.googleapis.com/projects/${projectNumber}/locations/global/`
      + `workloadIdentityPools/${pool}/subject/${claims.sub}`,
    provider: p.audience,
    scope: p.scope ?? null,
  });
  sendJson(res, 200, {
    access_token: token,
    issued_token_type: TYPE_ACCESS_TOKEN,
    token_type: "Bearer",
    expires_in: lifetime,
  });
}

// ---------------------------------------------------------------------------------------------
// Google: IAM Credentials and Vertex AI (google.rpc.Status errors).

const GOOGLE_STATUS = {
  400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
  429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
};

function googleErrorBody(code, status, message, details) {
  return { error: { code, message, status, ...(details ? { details } : {}) } };
}

function googleApiError(code, message, details) {
  const status = GOOGLE_STATUS[code] ?? "UNKNOWN";
  return new Reply(code, status, message, (res) => {
    sendJson(res, code, googleErrorBody(code, status, message, details),
      code === 401 ? { "www-authenticate": 'Bearer realm="https://accounts.google.com/"' } : {});
  });
}

const UNAUTHENTICATED = "Request had invalid authentication credentials. Expected OAuth 2 access "
  + "token, login cookie or other valid authentication credential. See "
  + "https://developers.google.com/identity/sign-in/web/devconsole-project.";

function bearerRecord(req, kinds) {
  const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization || "");
  if (!m) throw googleApiError(401, UNAUTHENTICATED);
  const record = lookup(m[1], kinds);
  if (!record || record.expires_at <= Date.now()) throw googleApiError(401, UNAUTHENTICATED);
  return record;
}

function serviceAccount(email) {
  for (const sa of googleConf.service_accounts) {
    const entry = typeof sa === "string" ? { email: sa } : sa;
    if (entry.email === email) return entry;
  }
  return null;
}

const IAM_GENERATE = /^\/v1\/projects\/([^/]+)\/serviceAccounts\/([^/:]+):generateAccessToken$/;

async function googleIam(req, res, body, url) {
  const [, project, rawEmail] = IAM_GENERATE.exec(url.pathname);
  const email = safeDecodeComponent(rawEmail);
  const record = bearerRecord(req, ["google_sts"]);
  let request;
  try {
    request = parseJsonBody(body) ?? {};
  } catch (e) {
    throw googleApiError(400, `Invalid JSON payload received. ${e.message}`);
  }
  stats.last_google_iam = {
    service_account: email,
    scope: request.scope ?? null,
    lifetime: request.lifetime ?? null,
    sub: record.sub,
  };
  if (project !== "-") {
    throw googleApiError(400, "The project ID must be the wildcard character '-'.");
  }
  if (!Array.isArray(request.scope) || request.scope.length === 0
      || !request.scope.every((s) => typeof s === "string" && s)) {
    throw googleApiError(400, "Request contains an invalid argument: scope must be a non-empty list.");
  }
  let lifetime = 3600;
  if (request.lifetime !== undefined) {
    const m = typeof request.lifetime === "string" && /^(\d{1,6})(?:\.\d{1,9})?s$/.exec(request.lifetime);
    if (!m) {
      throw googleApiError(400, "Invalid value at 'lifetime' (type.googleapis.com/"
        + "google.protobuf.Duration), Field 'lifetime', Illegal duration format; duration must "
        + "end with 's'");
    }
    lifetime = Number(m[1]);
    if (lifetime < 1 || lifetime > 43200) {
      throw googleApiError(400, "The lifetime must be between 1 and 43200 seconds.");
    }
  }
  const sa = serviceAccount(email);
  if (!sa) {
    throw googleApiError(404, `Not found; Gaia id not found for email ${email}`);
  }
  if (sa.subjects && !sa.subjects.includes(record.sub)) {
    throw googleApiError(403, "Permission 'iam.serviceAccounts.getAccessToken' denied on resource "
      + "(or it may not exist).", [{
      "@type": "type.googleapis.com/google.rpc.ErrorInfo",
      reason: "IAM_PERMISSION_DENIED",
      domain: "iam.googleapis.com",
      metadata: { permission: "iam.serviceAccounts.getAccessToken" },
    }]);
  }
  const seconds = ttlFor("google_iam", lifetime);
  const expiresAt = Date.now() + seconds * 1000;
  const token = `ya29.c.iam-${randomId(60, B64ISH.slice(0, 62))}`;
  remember(token, {
    kind: "google_iam",
    expires_at: expiresAt,
    sub: record.sub,
    principal: `serviceAccount:${email}`,
    service_account: email,
    scope: request.scope,
  });
  sendJson(res, 200, { accessToken: token, expireTime: isoSeconds(expiresAt) });
}

const VERTEX_GENERATE = /^\/(v1|v1beta1)\/projects\/([^/]+)\/locations\/([^/]+)\/publishers\/google\/models\/([^/:]+):generateContent$/;

async function vertexGenerate(req, res, body, url) {
  const [, apiVersion, project, location, model] = VERTEX_GENERATE.exec(url.pathname);
  const kinds = googleConf.vertex_accepts_federated ? ["google_iam", "google_sts"] : ["google_iam"];
  const record = bearerRecord(req, kinds);
  let request;
  try {
    request = parseJsonBody(body);
  } catch (e) {
    throw googleApiError(400, `Invalid JSON payload received. ${e.message}`);
  }
  if (!request || !Array.isArray(request.contents) || request.contents.length === 0) {
    throw googleApiError(400, "Unable to submit request because it must include at least one "
      + "parts field, which describes the prompt input.");
  }
  const last = request.contents[request.contents.length - 1];
  const prompt = Array.isArray(last?.parts)
    ? last.parts.filter((p) => p && typeof p.text === "string").map((p) => p.text).join("")
    : "";
  stats.last_vertex = {
    api_version: apiVersion, project, location, model, prompt,
    token_kind: record.kind === "google_iam" ? "iam" : "sts", principal: record.principal,
  };
  const text = `echo: ${prompt}`;
  const promptTokens = Math.max(1, Math.ceil(prompt.length / 4));
  const outTokens = Math.max(1, Math.ceil(text.length / 4));
  sendJson(res, 200, {
    candidates: [{
      content: { role: "model", parts: [{ text }] },
      finishReason: "STOP",
      avgLogprobs: -0.01,
    }],
    usageMetadata: {
      promptTokenCount: promptTokens,
      candidatesTokenCount: outTokens,
      totalTokenCount: promptTokens + outTokens,
    },
    modelVersion: model,
    createTime: new Date().toISOString(),
    responseId: randomId(20, B64ISH.slice(0, 62)),
  });
}

function googleRouter(req, url) {
  if (req.method !== "POST") return null;
  if (url.pathname === "/v1/token") return { target: "google_sts", action: "google.sts.token", handler: googleSts };
  if (IAM_GENERATE.test(url.pathname)) {
    return { target: "google_iam", action: "iamcredentials.generateAccessToken", handler: googleIam };
  }
  if (VERTEX_GENERATE.test(url.pathname)) {
    return { target: "vertex", action: "aiplatform.generateContent", handler: vertexGenerate };
  }
  return null;
}

function googleNotFound(req, res, url) {
  sendJson(res, 404, googleErrorBody(404, "NOT_FOUND",
    `The requested URL ${url.pathname} was not found on this server (method ${req.method}).`));
}

// ---------------------------------------------------------------------------------------------
// Microsoft Entra ID.

// The key Entra signs its own access tokens with (published at discovery/v2.0/keys).
const entraKey = await generateKeyPair("RS256", { modulusLength: 2048 });
const entraKid = randomId(27, B64ISH.slice(0, 62));
const entraJwk = { ...(await exportJWK(entraKey.publicKey)), kid: entraKid, use: "sig", kty: "RSA" };

function entraTimestamp() {
  return new Date().toISOString().replace("T", " ").replace(/\.\d{3}Z$/, "Z");
}

function entraError(status, error, code, message, req) {
  return new Reply(status, error, `AADSTS${code}: ${message}`, (res) => {
    const traceId = crypto.randomUUID();
    const correlationId = req.headers["client-request-id"] || crypto.randomUUID();
    const timestamp = entraTimestamp();
    sendJson(res, status, {
      error,
      error_description: `AADSTS${code}: ${message}\r\nTrace ID: ${traceId}\r\nCorrelation ID: `
        + `${correlationId}\r\nTimestamp: ${timestamp}`,
      error_codes: [code],
      timestamp,
      trace_id: traceId,
      correlation_id: correlationId,
      error_uri: `${entraBase}/error?code=${code}`,
    }, {
      "x-ms-request-id": traceId,
      "client-request-id": correlationId,
      ...(status === 401 ? { "www-authenticate": 'Bearer realm=""' } : {}),
    });
  });
}

let entraBase; // https://127.0.0.1:PORT, set once the listener is bound

function entraTenantOk(tenant) {
  return tenant === entraConf.tenant_id;
}

function tenantNotFound(tenant, req) {
  return entraError(400, "invalid_tenant", 90002, `Tenant '${tenant}' not found. Check to make `
    + "sure you have the correct tenant ID and are signing into the correct cloud. Check with "
    + "your subscription administrator, this may happen if there are no active subscriptions "
    + "for the tenant.", req);
}

function entraDiscovery(tenant) {
  const base = `${entraBase}/${tenant}`;
  return {
    token_endpoint: `${base}/oauth2/v2.0/token`,
    token_endpoint_auth_methods_supported: ["client_secret_post", "private_key_jwt", "client_secret_basic"],
    jwks_uri: `${base}/discovery/v2.0/keys`,
    response_modes_supported: ["query", "fragment", "form_post"],
    subject_types_supported: ["pairwise"],
    id_token_signing_alg_values_supported: ["RS256"],
    response_types_supported: ["code", "id_token", "code id_token", "id_token token"],
    scopes_supported: ["openid", "profile", "email", "offline_access"],
    issuer: `${entraBase}/${entraConf.tenant_id}/v2.0`,
    request_uri_parameter_supported: false,
    userinfo_endpoint: "https://graph.microsoft.com/oidc/userinfo",
    authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
    device_authorization_endpoint: `${base}/oauth2/v2.0/devicecode`,
    http_logout_supported: true,
    frontchannel_logout_supported: true,
    end_session_endpoint: `${base}/oauth2/v2.0/logout`,
    claims_supported: ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
      "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce",
      "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
    kerberos_endpoint: `${base}/kerberos`,
    tenant_region_scope: "NA",
    cloud_instance_name: "microsoftonline.com",
    cloud_graph_host_name: "graph.windows.net",
    msgraph_host: "graph.microsoft.com",
    rbac_url: "https://pas.windows.net",
  };
}

const ENTRA_DISCOVERY = /^\/([^/]+)\/v2\.0\/\.well-known\/openid-configuration$/;
const ENTRA_KEYS = /^\/([^/]+)\/discovery\/v2\.0\/keys$/;
const ENTRA_TOKEN = /^\/([^/]+)\/oauth2\/v2\.0\/token$/;

async function entraGetDiscovery(req, res, body, url) {
  const [, tenant] = ENTRA_DISCOVERY.exec(url.pathname);
  if (!entraTenantOk(tenant)) throw tenantNotFound(tenant, req);
  sendJson(res, 200, entraDiscovery(tenant), { "cache-control": "max-age=86400, private" });
}

async function entraGetKeys(req, res, body, url) {
  const [, tenant] = ENTRA_KEYS.exec(url.pathname);
  if (!entraTenantOk(tenant)) throw tenantNotFound(tenant, req);
  sendJson(res, 200, { keys: [entraJwk] });
}

// Instance discovery, for a client that does not disable it: this host is its own cloud.
async function entraInstanceDiscovery(req, res, body, url) {
  const authority = url.searchParams.get("authorization_endpoint") || "";
  const tenant = /^https:\/\/[^/]+\/([^/]+)\//.exec(authority)?.[1] ?? entraConf.tenant_id;
  const host = new URL(entraBase).host;
  sendJson(res, 200, {
    tenant_discovery_endpoint: `${entraBase}/${tenant}/v2.0/.well-known/openid-configuration`,
    "api-version": "1.1",
    metadata: [{ preferred_network: host, preferred_cache: host, aliases: [host] }],
  });
}

function federatedMatch(app, iss, aud, sub) {
  const creds = (app.federated_credentials ?? []).map((c) => ({
    issuer: c.issuer ?? config.broker_issuer,
    subject: c.subject,
    audiences: c.audiences ?? [ENTRA_DEFAULT_AUDIENCE],
  }));
  const auds = [aud].flat();
  const byIssuer = creds.filter((c) => c.issuer === iss);
  if (!byIssuer.length) return { error: "issuer" };
  const byAudience = byIssuer.filter((c) => c.audiences.some((a) => auds.includes(a)));
  if (!byAudience.length) return { error: "audience" };
  const match = byAudience.find((c) => c.subject === sub);
  if (!match) return { error: "subject" };
  return { credential: match };
}

async function entraToken(req, res, body, url) {
  const [, tenant] = ENTRA_TOKEN.exec(url.pathname);
  const p = Object.fromEntries(parseForm(body));
  const { client_assertion: assertion, client_secret: secret, ...shown } = p;
  stats.last_entra = {
    tenant,
    params: { ...shown, ...(assertion ? { client_assertion: "(present)" } : {}) },
  };
  if (!entraTenantOk(tenant)) throw tenantNotFound(tenant, req);
  if (!p.grant_type) {
    throw entraError(400, "invalid_request", 900144, "The request body must contain the "
      + "following parameter: 'grant_type'.", req);
  }
  if (p.grant_type !== "client_credentials") {
    throw entraError(400, "unsupported_grant_type", 70003,
      `The app requested an unsupported grant type '${p.grant_type}'.`, req);
  }
  if (!p.client_id) {
    throw entraError(400, "invalid_request", 900144, "The request body must contain the "
      + "following parameter: 'client_id'.", req);
  }
  if (!p.scope) {
    throw entraError(400, "invalid_request", 900144, "The request body must contain the "
      + "following parameter: 'scope'.", req);
  }
  const scopes = p.scope.split(" ").filter(Boolean);
  if (scopes.length !== 1 || !scopes[0].endsWith("/.default")) {
    throw entraError(400, "invalid_scope", 1002012, `The provided value for scope ${p.scope} is `
      + "not valid. Client credential flows must have a scope value with /.default suffixed to "
      + "the resource identifier (application ID URI).", req);
  }
  const app = entraConf.applications.find((a) => a.client_id === p.client_id);
  if (!app) {
    throw entraError(400, "unauthorized_client", 700016, `Application with identifier `
      + `'${p.client_id}' was not found in the directory '${tenant}'. This can happen if the `
      + "application has not been installed by the administrator of the tenant or consented to "
      + "by any user in the tenant. You may have sent your authentication request to the wrong "
      + "tenant.", req);
  }
  if (secret !== undefined) {
    throw entraError(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the "
      + `secret being sent in the request is the client secret value, not the client secret ID, `
      + `for a secret added to app '${p.client_id}'.`, req);
  }
  if (!assertion) {
    throw entraError(401, "invalid_client", 7000216, "'client_assertion', 'client_secret' or "
      + "'request' is required for the 'client_credentials' grant type.", req);
  }
  if (p.client_assertion_type !== JWT_BEARER_ASSERTION) {
    throw entraError(401, "invalid_client", 70002, "The client_assertion_type is not supported; "
      + `expected '${JWT_BEARER_ASSERTION}'.`, req);
  }
  const peek = peekJwt(assertion);
  recordJwt("entra", peek);
  if (!peek) {
    throw entraError(400, "invalid_request", 50027, "JWT token is invalid or malformed.", req);
  }
  if (peek.header.alg !== "RS256") {
    throw entraError(401, "invalid_client", 5002738, `Invalid JWT token. '${peek.header.alg}' is `
      + "not a supported signature algorithm. Supported signing algorithms are: 'RS256,HS256'", req);
  }
  const { iss, aud, sub } = peek.claims;
  const match = federatedMatch(app, iss, aud, sub);
  const fic = "Please note that the matching is done using a case-sensitive comparison. Check "
    + "your federated identity credential Subject, Audience and Issuer against the presented "
    + "assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation";
  if (match.error === "issuer") {
    throw entraError(400, "invalid_client", 700211, "No matching federated identity record found "
      + `for presented assertion issuer '${iss}'. ${fic}`, req);
  }
  if (match.error === "audience") {
    throw entraError(400, "invalid_client", 700212, "No matching federated identity record found "
      + `for presented assertion audience '${[aud].flat().join(",")}'. ${fic}`, req);
  }
  if (match.error === "subject") {
    throw entraError(400, "invalid_client", 70021, "No matching federated identity record found "
      + `for presented assertion. Assertion Issuer: '${iss}'. Assertion Subject: '${sub}'. `
      + `Assertion Audience: '${[aud].flat().join(",")}'. ${fic}`, req);
  }
  try {
    await verifyBrokerJwt(assertion, {
      issuer: match.credential.issuer,
      audience: match.credential.audiences,
      algorithms: ["RS256"],
      requiredClaims: ["exp", "sub"],
    });
  } catch (e) {
    if (e.code === "ERR_JWT_EXPIRED" || e.claim === "nbf") {
      const now = Math.floor(Date.now() / 1000);
      throw entraError(400, "invalid_client", 700024, "Client assertion is not within its valid "
        + `time range. Current time: ${new Date(now * 1000).toISOString()}, assertion valid from `
        + `${new Date((peek.claims.nbf ?? peek.claims.iat ?? 0) * 1000).toISOString()}, expiry `
        + `time of assertion ${new Date((peek.claims.exp ?? 0) * 1000).toISOString()}.`, req);
    }
    if (e.code === "ERR_JWKS_NO_MATCHING_KEY") {
      throw entraError(401, "invalid_client", 700027, "Client assertion failed signature "
        + `validation. Key was not found. Trace: the key '${peek.header.kid}' is not in the `
        + "issuer's JWKS.", req);
    }
    throw entraError(401, "invalid_client", 700027, `Client assertion failed signature validation. `
      + `${e.code || e.name}: ${e.message}`, req);
  }

  const resource = scopes[0].slice(0, -"/.default".length);
  const lifetime = ttlFor("entra", 3599);
  const now = Math.floor(Date.now() / 1000);
  const oid = crypto.createHash("sha256").update(`${tenant}/${p.client_id}`).digest("hex");
  const objectId = `${oid.slice(0, 8)}-${oid.slice(8, 12)}-${oid.slice(12, 16)}-${oid.slice(16, 20)}-${oid.slice(20, 32)}`;
  const accessToken = await new SignJWT({
    aud: resource,
    iss: `https://sts.windows.net/${tenant}/`,
    idp: `https://sts.windows.net/${tenant}/`,
    appid: p.client_id,
    appidacr: "2",
    oid: objectId,
    sub: objectId,
    tid: tenant,
    uti: randomId(22, B64ISH.slice(0, 62)),
    ver: "1.0",
  }).setProtectedHeader({ alg: "RS256", typ: "JWT", kid: entraKid, x5t: entraKid })
    .setIssuedAt(now).setNotBefore(now).setExpirationTime(now + lifetime)
    .sign(entraKey.privateKey);
  remember(accessToken, {
    kind: "entra",
    expires_at: (now + lifetime) * 1000,
    sub,
    client_id: p.client_id,
    tenant,
    resource,
  });
  stats.last_entra.client_id = p.client_id;
  stats.last_entra.scope = p.scope;
  stats.last_entra.assertion_sub = sub;
  sendJson(res, 200, {
    token_type: "Bearer",
    expires_in: lifetime,
    ext_expires_in: lifetime,
    access_token: accessToken,
  }, {
    "x-ms-request-id": crypto.randomUUID(),
    ...(req.headers["client-request-id"] ? { "client-request-id": req.headers["client-request-id"] } : {}),
  });
}

function entraRouter(req, url) {
  if (req.method === "GET") {
    if (ENTRA_DISCOVERY.test(url.pathname)) {
      return { target: "entra_discovery", action: "entra.openid-configuration", handler: entraGetDiscovery };
    }
    if (ENTRA_KEYS.test(url.pathname)) {
      return { target: "entra_discovery", action: "entra.keys", handler: entraGetKeys };
    }
    if (url.pathname === "/common/discovery/instance") {
      return { target: "entra_discovery", action: "entra.instance-discovery", handler: entraInstanceDiscovery };
    }
  }
  if (req.method === "POST" && ENTRA_TOKEN.test(url.pathname)) {
    return { target: "entra_token", action: "entra.token", handler: entraToken };
  }
  return null;
}

function entraNotFound(req, res, url) {
  sendJson(res, 404, { error: "invalid_request",
    error_description: `AADSTS900561: no endpoint ${req.method} ${url.pathname}` });
}

// ---------------------------------------------------------------------------------------------
// Listeners.

function guard(server, name) {
  // Malformed HTTP (not an application error) gets Node's 400 and the connection closed.
  server.on("clientError", (err, socket) => {
    if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
    else socket.destroy();
  });
  server.on("tlsClientError", () => {});
  server.on("sessionError", () => {});
  server.on("error", (e) => process.stderr.write(`cloud_server: ${name}: ${e.stack}\n`));
  return server;
}

let tlsOptions = null;
if (config.cert) {
  tlsOptions = { cert: readFileSync(config.cert), key: readFileSync(config.key) };
}

function makeServer(name, tls, router, notFound) {
  const handler = makeHandler(name, router, notFound);
  if (tls) {
    if (!tlsOptions) throw new Error(`${name} needs cert and key in the config`);
    return guard(http2.createSecureServer({ ...tlsOptions, allowHTTP1: true }, handler), name);
  }
  return guard(http.createServer(handler), name);
}

const awsServer = makeServer("aws", false, awsRouter, awsNotFound);
const awsPort = await listen(awsServer, config.aws_port);
let awsTlsPort = null;
let googlePort = null;
let entraPort = null;
if (tlsOptions) {
  awsTlsPort = await listen(makeServer("aws_tls", true, awsRouter, awsNotFound), config.aws_tls_port);
  googlePort = await listen(makeServer("google", true, googleRouter, googleNotFound), config.google_port);
  entraPort = await listen(makeServer("entra", true, entraRouter, entraNotFound), config.entra_port);
  entraBase = `https://127.0.0.1:${entraPort}`;
}

// ---------------------------------------------------------------------------------------------
// Control listener.

function introspect(token) {
  const record = token ? issued.get(token) : undefined;
  if (!record || record.expires_at <= Date.now()) return { active: false };
  const { secret_access_key: _s, session_token: _t, ...shown } = record;
  return { active: true, ...shown, exp: Math.floor(record.expires_at / 1000) };
}

const TTL_KINDS = new Set(["aws", "google_sts", "google_iam", "entra"]);

async function onControl(req, res) {
  let url;
  try {
    url = new URL(req.url, "http://x");
  } catch {
    return sendJson(res, 400, { error: "bad request target" });
  }
  const route = `${req.method} ${url.pathname}`;
  try {
    const raw = (await readBody(req, MAX_CONTROL_BODY)).toString("utf8");
    const body = raw ? JSON.parse(raw) : {};
    switch (route) {
      case "GET /stats":
        return sendJson(res, 200, stats);
      case "POST /reset":
        stats = newStats();
        faults = new Map();
        for (const k of Object.keys(ttlOverride)) delete ttlOverride[k];
        return sendJson(res, 200, { ok: true });
      case "POST /fault": {
        const target = body.target ?? "*";
        if (target !== "*" && !TARGETS.has(target)) {
          return sendJson(res, 400, { error: `unknown fault target ${target}` });
        }
        if (!FAULT_MODES.has(body.mode)) {
          return sendJson(res, 400, { error: `unknown fault mode ${body.mode}` });
        }
        if (body.status !== undefined
            && !(Number.isInteger(body.status) && body.status >= 200 && body.status <= 599)) {
          return sendJson(res, 400, { error: "status must be an HTTP status from 200 to 599" });
        }
        if (body.count !== undefined && !(Number.isInteger(body.count) && body.count > 0)) {
          return sendJson(res, 400, { error: "count must be a positive integer" });
        }
        if (body.mode === "none") faults.delete(target);
        else faults.set(target, { ...body, target });
        if (body.mode === "none" && target === "*") faults = new Map();
        return sendJson(res, 200, { ok: true, faults: Object.fromEntries(faults) });
      }
      case "POST /ttl":
        for (const [kind, seconds] of Object.entries(body)) {
          if (!TTL_KINDS.has(kind)) return sendJson(res, 400, { error: `unknown ttl kind ${kind}` });
          if (seconds !== null && !(Number.isInteger(seconds) && seconds > 0)) {
            return sendJson(res, 400, { error: `${kind}: seconds must be a positive integer or null` });
          }
        }
        for (const [kind, seconds] of Object.entries(body)) {
          if (seconds === null) delete ttlOverride[kind];
          else ttlOverride[kind] = seconds;
        }
        return sendJson(res, 200, { ok: true, ttl: ttlOverride });
      case "GET /introspect":
        return sendJson(res, 200, introspect(url.searchParams.get("token")));
      default:
        return sendJson(res, 404, { error: `no such control route ${route}` });
    }
  } catch (e) {
    return sendJson(res, 400, { error: e.message });
  }
}

const controlServer = guard(http.createServer(onControl), "control");
const controlPort = await listen(controlServer, config.control_port);

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => process.exit(0));
}
process.on("uncaughtException", (e) => {
  // A bug in a handler must not take the other stand-ins down with it.
  process.stderr.write(`cloud_server: uncaught: ${e.stack}\n`);
});

const https_ = (port) => (port === null ? null : `https://127.0.0.1:${port}`);
process.stdout.write(`${JSON.stringify({
  ready: true,
  aws_endpoint: `http://127.0.0.1:${awsPort}`,
  aws_tls_endpoint: https_(awsTlsPort),
  google_endpoint: https_(googlePort),
  entra_endpoint: https_(entraPort),
  ports: {
    aws: awsPort, aws_tls: awsTlsPort, google: googlePort, entra: entraPort, control: controlPort,
  },
  control_port: controlPort,
})}\n`);
