// Verify a sessiongate token in a Node.js microservice with `jose` (docs/verifying.md).
//
//   npm install jose@5
//   node verify_jose.mjs --jwks-url http://gateway:9090/.well-known/jwks.json \
//       --issuer https://gateway.internal --audience orders --token "$JWT"
//
// Prints the verified claims as JSON; exits 1 when the token does not verify.
import { createRemoteJWKSet, jwtVerify } from "jose";

function arg(name) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= process.argv.length) throw new Error(`missing --${name}`);
  return process.argv[i + 1];
}

// One JWKS per process: jose caches it (cacheMaxAge) and refetches on an unknown kid,
// at most once per cooldownDuration.
const jwks = createRemoteJWKSet(new URL(arg("jwks-url")), {
  cacheMaxAge: 300_000,
  cooldownDuration: 10_000,
});

try {
  const { payload } = await jwtVerify(arg("token"), jwks, {
    issuer: arg("issuer"),
    audience: arg("audience"),
    typ: "at+jwt",
    algorithms: ["ES256", "EdDSA"],
    clockTolerance: 30,
    requiredClaims: ["exp", "iat", "nbf", "sub", "jti"],
  });
  console.log(JSON.stringify(payload));
} catch (e) {
  console.error(`invalid token: ${e.code ?? ""} ${e.message}`);
  process.exit(1);
}
