// An independent DPoP client for the end-to-end tests: npm `dpop` (panva) makes the proofs,
// `jose` signs access tokens bound to the proof key (cnf.jkt). Nothing here shares code
// with the filters.
//
// stdin (JSON):
//   { "alg": "ES256" | "PS256" | "Ed25519",
//     "key": { "private_jwk": {...}, "public_jwk": {...} }     (optional: reuse a key)
//     "token": { "issuer_private_jwk": {...}, "alg": "ES256", "kid": "...", "claims": {...} }
//              (optional: jose signs an at+jwt with these claims plus cnf.jkt)
//     "access_token": "..."                                    (optional: use this token)
//     "proofs": [ { "htm": "GET", "htu": "https://...", "nonce": "..." } ] }
// stdout (JSON): { "public_jwk", "private_jwk", "jkt", "access_token", "proofs": [...] }
import { calculateThumbprint, generateKeyPair, generateProof } from 'dpop';
import { exportJWK, importJWK, SignJWT } from 'jose';

const input = JSON.parse(await new Promise((resolve, reject) => {
  let data = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (c) => { data += c; });
  process.stdin.on('end', () => resolve(data));
  process.stdin.on('error', reject);
}));

const joseAlg = (alg) => (alg === 'Ed25519' ? 'EdDSA' : alg);

let keypair;
if (input.key) {
  keypair = {
    privateKey: await importJWK(input.key.private_jwk, joseAlg(input.alg), { extractable: true }),
    publicKey: await importJWK(input.key.public_jwk, joseAlg(input.alg), { extractable: true }),
  };
} else {
  keypair = await generateKeyPair(input.alg, { extractable: true });
}
const jkt = await calculateThumbprint(keypair.publicKey);

let accessToken = input.access_token;
if (input.token) {
  const t = input.token;
  const issuerKey = await importJWK(t.issuer_private_jwk, t.alg);
  const claims = { ...t.claims, cnf: { ...(t.claims.cnf || {}), jkt } };
  accessToken = await new SignJWT(claims)
    .setProtectedHeader({ alg: t.alg, typ: 'at+jwt', kid: t.kid })
    .sign(issuerKey);
}

const proofs = [];
for (const p of input.proofs || []) {
  proofs.push(await generateProof(keypair, p.htu, p.htm, p.nonce, accessToken, p.additional));
}

process.stdout.write(JSON.stringify({
  public_jwk: await exportJWK(keypair.publicKey),
  private_jwk: await exportJWK(keypair.privateKey),
  jkt,
  access_token: accessToken,
  proofs,
}));
