// Verifies a brokerd token the way a Node relying party would: with jose, against a JWKS.
// Reads {"token", "jwks", "audience", "issuer"} as JSON on stdin; prints the verified payload
// as JSON on stdout and exits 0, or prints the error on stderr and exits 1.
import { createLocalJWKSet, jwtVerify } from "jose";

let input = "";
process.stdin.setEncoding("utf8");
for await (const chunk of process.stdin) input += chunk;

try {
  const { token, jwks, audience, issuer } = JSON.parse(input);
  const keySet = createLocalJWKSet(jwks);
  const { payload, protectedHeader } = await jwtVerify(token, keySet, {
    audience,
    issuer,
    algorithms: ["EdDSA", "ES256", "RS256"],
    requiredClaims: ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"],
  });
  process.stdout.write(JSON.stringify({ payload, protectedHeader }) + "\n");
} catch (e) {
  process.stderr.write(`jose: ${e.code || e.name}: ${e.message}\n`);
  process.exit(1);
}
