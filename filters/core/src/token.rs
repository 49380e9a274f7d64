//! Access-token checks at the resource server (docs/checks.md §1; RFC 9068, RFC 6750, RFC 8725,
//! FAPI 2.0 §5.3.4/§5.4). Pure: the caller supplies the keys, the verifier and the time.

use sha2::{Digest, Sha256};

use crate::b64;
use crate::claims::VerifiedToken;
use crate::denial::Reason;
use crate::jose::jws::JwsError;
use crate::jose::verify::VerifyError;
use crate::jose::{Alg, CompactJws, Jwk, SignatureVerifier};
use crate::policy::Policy;
use crate::scheme::Scheme;

/// The token as presented: scheme and the token68 string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presented<'a> {
    pub scheme: Scheme,
    pub token: &'a str,
}

/// §1.1: the token comes only from one `Authorization` header, with a scheme the policy
/// allows (RFC 6750 §2.1; FAPI 2.0 §5.3.4); never from the query string (RFC 6750 §2.3).
/// `path` is the request `:path` (query included).
pub fn extract<'a>(
    policy: &Policy,
    authorization: &'a [String],
    path: &str,
) -> Result<Presented<'a>, Reason> {
    if query_has_access_token(path) {
        return Err(Reason::TokenInQuery);
    }
    let value = match authorization {
        [] => return Err(Reason::MissingToken),
        // Envoy folds a repeated `Authorization` into one value joined by `,`, which a
        // token68 never contains.
        [one] if !one.contains(',') => one.as_str(),
        _ => return Err(Reason::MultipleAuthorization),
    };
    let (scheme_name, rest) = value.split_once(' ').unwrap_or((value, ""));
    // Another scheme (Basic, ...) carries no token of ours: challenge without `error`.
    let scheme = Scheme::parse(scheme_name).ok_or(Reason::MissingToken)?;
    let allowed = match scheme {
        Scheme::Dpop => policy.token.allow_dpop,
        Scheme::Bearer => policy.token.allow_bearer,
    };
    if !allowed {
        return Err(Reason::SchemeNotAllowed);
    }
    let token = rest.trim_matches(' ');
    // RFC 6750 §2.1 token68 (b64token) characters only; a JWS also has exactly two dots.
    if token.is_empty()
        || !token
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._~+/=".contains(&c))
    {
        return Err(Reason::MalformedToken);
    }
    Ok(Presented { scheme, token })
}

fn query_has_access_token(path: &str) -> bool {
    let Some((_, query)) = path.split_once('?') else {
        return false;
    };
    crate::fhir::server::form_has_access_token(query.split('#').next().unwrap_or(""))
}

/// The scheme a single `Authorization` value names, for the challenge of a refusal made
/// before the token was read (RFC 6750 §3: answer in the scheme the client used).
pub fn scheme_named(authorization: &[String]) -> Option<Scheme> {
    Scheme::parse(authorization.first()?.split(' ').next()?)
}

/// The policy index of the issuer an (unverified) token names, to know whose keys to refetch.
pub fn issuer_index_of(policy: &Policy, token: &str) -> Option<usize> {
    let jws = CompactJws::parse(token).ok()?;
    policy.issuer_index(jws.payload.get("iss")?.as_str()?)
}

/// base64url(SHA-256(token)): the cache key and the `ath` a DPoP proof must carry.
pub fn token_sha256(token: &str) -> String {
    b64::encode(&Sha256::digest(token.as_bytes()))
}

/// Where the keys of an issuer stand, as the token check sees them.
pub enum KeyLookup<'k> {
    Found(&'k Jwk),
    /// Keys are loaded but none matches `kid`/`alg`.
    NoMatch,
    /// The issuer's keys have never been loaded.
    NotLoaded,
}

/// The keys the token check may use (inline JWKS, or the fetched-and-shared cache).
pub trait KeyProvider {
    fn lookup(&self, issuer_index: usize, kid: Option<&str>, alg: Alg) -> KeyLookup<'_>;
}

/// Verifies a presented token fully: §1.2–§1.9 and §2.14 (Bearer downgrade).
pub fn validate(
    policy: &Policy,
    keys: &dyn KeyProvider,
    verifier: &dyn SignatureVerifier,
    presented: Presented<'_>,
    now: i64,
) -> Result<VerifiedToken, Reason> {
    let jws = CompactJws::parse(presented.token).map_err(|e| match e {
        JwsError::Malformed => Reason::MalformedToken,
        JwsError::BadAlg => Reason::AlgNotAllowed,
        JwsError::UnsupportedCrit => Reason::UnsupportedCrit,
    })?;
    // §1.2, RFC 9068 §2.1 / §4: typ is at+jwt (media types compare case-insensitively).
    let typ = jws.header_str("typ").ok_or(Reason::BadTyp)?;
    let typ_ok = typ.eq_ignore_ascii_case("at+jwt")
        || typ.eq_ignore_ascii_case("application/at+jwt")
        || (policy.token.allow_typ_jwt && typ.eq_ignore_ascii_case("JWT"));
    if !typ_ok {
        return Err(Reason::BadTyp);
    }
    // §1.3: alg on the allow-list (none/HMAC never parse to an Alg).
    if !policy.token.algs.contains(&jws.alg) {
        return Err(Reason::AlgNotAllowed);
    }
    // §1.5: issuer exact. Looked up before the key: the key set is per issuer.
    let iss = claim_str(&jws, "iss").ok_or(Reason::MissingClaim)?;
    let issuer_index = policy.issuer_index(iss).ok_or(Reason::UnknownIssuer)?;
    // §1.4: key by kid from the issuer's JWKS only; jku/x5u/jwk/x5c are never consulted.
    let jwk = match keys.lookup(issuer_index, jws.header_str("kid"), jws.alg) {
        KeyLookup::Found(k) => k,
        KeyLookup::NoMatch => return Err(Reason::UnknownKey),
        KeyLookup::NotLoaded => return Err(Reason::KeysUnavailable),
    };
    verifier
        .verify(
            jws.alg,
            &jwk.key,
            jws.signing_input.as_bytes(),
            &jws.signature,
        )
        .map_err(|e| match e {
            VerifyError::KeyMismatch => Reason::WeakOrMismatchedKey,
            VerifyError::BadSignature | VerifyError::Unsupported => Reason::BadSignature,
        })?;
    check_claims(policy, &jws, presented, now)
}

/// §1.5–§1.9 on a token whose signature has been verified.
fn check_claims(
    policy: &Policy,
    jws: &CompactJws<'_>,
    presented: Presented<'_>,
    now: i64,
) -> Result<VerifiedToken, Reason> {
    // §1.8, RFC 9068 §2.2: required claims with their types.
    let iss = claim_str(jws, "iss").ok_or(Reason::MissingClaim)?;
    // RFC 9068 §2.2 requires `sub`; a client-credentials token from Duende IdentityServer
    // (HelseID) has none, only `client_id`. `token.require_sub: false` accepts that; a `sub`
    // that is present must still be a string.
    let sub = match jws.payload.get("sub") {
        Some(v) => v.as_str().ok_or(Reason::MissingClaim)?,
        None if !policy.token.require_sub => "",
        None => return Err(Reason::MissingClaim),
    };
    let client_id = claim_str(jws, "client_id").ok_or(Reason::MissingClaim)?;
    claim_str(jws, "jti").ok_or(Reason::MissingClaim)?;
    let exp = claim_int(jws, "exp").ok_or(Reason::MissingClaim)?;
    let iat = claim_int(jws, "iat").ok_or(Reason::MissingClaim)?;
    let aud = jws.payload.get("aud").ok_or(Reason::MissingClaim)?;
    check_times(
        i64::try_from(policy.token.skew_seconds).unwrap_or(i64::MAX),
        now,
        exp,
        claim_nbf(jws)?,
        iat,
    )?;
    // §1.6: aud (string or array of strings) contains this API's audience.
    let auds: Vec<&str> = match aud {
        serde_json::Value::String(s) => vec![s.as_str()],
        serde_json::Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().ok_or(Reason::MissingClaim))
            .collect::<Result<_, _>>()?,
        _ => return Err(Reason::MissingClaim),
    };
    if !auds.contains(&policy.audience.as_str()) {
        return Err(Reason::WrongAudience);
    }
    if policy.sole_audience && auds.iter().any(|a| *a != policy.audience) {
        return Err(Reason::AudienceNotSole);
    }
    let cnf = jws.payload.get("cnf").and_then(|c| c.as_object());
    let cnf_jkt = cnf
        .and_then(|c| c.get("jkt"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let cnf_x5t_s256 = cnf
        .and_then(|c| c.get("x5t#S256"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let verified = VerifiedToken {
        scheme: presented.scheme,
        token_sha256: token_sha256(presented.token),
        iss: iss.to_string(),
        sub: sub.to_string(),
        client_id: client_id.to_string(),
        exp,
        scopes: crate::claims::scope_values(&jws.payload).ok_or(Reason::MissingClaim)?,
        cnf_jkt,
        cnf_x5t_s256,
        claims: jws.payload.clone(),
    };
    check_scheme_binding(presented.scheme, verified.cnf_jkt.as_deref())?;
    Ok(verified)
}

/// §1.7: exp in the future, nbf passed, iat not in the future, each with `skew`.
pub fn check_times(
    skew: i64,
    now: i64,
    exp: i64,
    nbf: Option<i64>,
    iat: i64,
) -> Result<(), Reason> {
    if now >= exp.saturating_add(skew) {
        return Err(Reason::Expired);
    }
    if let Some(nbf) = nbf {
        if now.saturating_add(skew) < nbf {
            return Err(Reason::NotYetValid);
        }
    }
    if iat > now.saturating_add(skew) {
        return Err(Reason::IssuedInFuture);
    }
    Ok(())
}

/// §2.14 / RFC 9449 §7.2: a DPoP-bound token must not be used with the Bearer scheme.
/// Applied on every request, including cache hits (the scheme is per request).
pub fn check_scheme_binding(scheme: Scheme, cnf_jkt: Option<&str>) -> Result<(), Reason> {
    if scheme == Scheme::Bearer && cnf_jkt.is_some() {
        return Err(Reason::BearerDowngrade);
    }
    Ok(())
}

fn claim_str<'j>(jws: &'j CompactJws<'_>, name: &str) -> Option<&'j str> {
    jws.payload.get(name).and_then(|v| v.as_str())
}

/// NumericDate (RFC 7519 §2): a JSON number; fractions are truncated.
fn claim_int(jws: &CompactJws<'_>, name: &str) -> Option<i64> {
    let v = jws.payload.get(name)?;
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

fn claim_nbf(jws: &CompactJws<'_>) -> Result<Option<i64>, Reason> {
    match jws.payload.get("nbf") {
        None => Ok(None),
        Some(_) => claim_int(jws, "nbf").map(Some).ok_or(Reason::MissingClaim),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn access_token_names_are_read_decoded() {
        for q in [
            "/x?access_token=t",
            "/x?a=1&ACCESS_TOKEN=t",
            "/x?%61ccess_token=t",
            "/x?access%5ftoken=t",
            "/x?%41%43%43%45%53%53%5F%54%4F%4B%45%4E=t",
            "/x?access_token",
        ] {
            assert!(super::query_has_access_token(q), "{q}");
        }
        for q in [
            "/x",
            "/x?access_tokens=t",
            "/x?a=access_token",
            "/x#access_token=t",
        ] {
            assert!(!super::query_has_access_token(q), "{q}");
        }
    }
}
