//! The reason-code table of `docs/reason-codes.md`, generated from [`Reason`] (code, status,
//! meaning from the variant's doc comment in `denial.rs`) and [`fix`] (what to change).
//! `fapi-guard reason-codes --markdown` prints it; `tests/reason_codes_doc.rs` fails when
//! the committed file differs.

use crate::denial::{Class, Reason};

/// What the caller (or the API owner) should change, per reason.
pub fn fix(reason: Reason) -> &'static str {
    use Reason::*;
    match reason {
        MissingToken => "Send `Authorization: DPoP <token>` (or `Bearer` where the policy allows it).",
        MultipleAuthorization => "Send exactly one `Authorization` header.",
        TokenInQuery => "Move the token from the `access_token` query parameter to the `Authorization` header.",
        TokenInBody => "Move the token from the `access_token` form field to the `Authorization` header.",
        MethodOverride => "Send the method you mean as the request method; drop `X-HTTP-Method-Override`, `X-Method-Override`, `X-HTTP-Method` and `_method`.",
        ParameterNameAmbiguous => "Write search-control and compartment parameters in their canonical case, once each (`_include`, `patient`); or set `fhir.server` to your server.",
        SearchBodyNotForm => "Send a `_search` body as `application/x-www-form-urlencoded`, or the parameters in the query.",
        SearchTotalUnchecked => "Put the patient pin in the query (or a form body), or search without `_summary=count`/`_count=0`.",
        SchemeNotAllowed => "Use a scheme the policy lists in `token.schemes` (the challenge names them).",
        MalformedToken => "Send the access token as a compact JWS (three base64url parts).",
        BadTyp => "Ask the issuer for RFC 9068 tokens (`typ: at+jwt`), or set `token.allow_typ_jwt` for `JWT`.",
        AlgNotAllowed => "Sign with an algorithm in `token.allowed_algs` (PS256, ES256, EdDSA).",
        UnsupportedCrit => "Do not put extensions the guard does not implement in `crit`.",
        UnknownIssuer => "Use a token from an issuer in `issuers[]` (exact `iss` string match).",
        UnknownKey => "Sign with a key published in the issuer's JWKS, with that `kid`; check `jwks_uri`/`jwks`.",
        WeakOrMismatchedKey => "Use a key whose type fits `alg`; RSA keys need at least 2048 bits.",
        BadSignature => "The token was changed or signed with another key: get a fresh token from the issuer.",
        Expired => "Get a fresh token; check the client's and the proxy's clocks (`diagnostics` shows both).",
        NotYetValid => "Wait until `nbf`, or fix the issuer's clock.",
        IssuedInFuture => "Fix the issuer's clock (`iat` is ahead of the proxy's).",
        MissingClaim => "The token needs `iss`, `sub`, `client_id`, `jti`, `exp`, `iat`, `aud` (RFC 9068 §2.2).",
        WrongAudience => "Request a token for this API's audience (`api.audience`; resource indicator).",
        AudienceNotSole => "Request a token for this API only (`api.sole_audience`).",
        KeysUnavailable => "Platform: make `jwks_uri` reachable through `jwks_cluster`; retry after `Retry-After`.",
        NoVerifiedToken => "Platform: run the token filter before this filter on every protected route.",
        BearerDowngrade => "Send a DPoP-bound token with the `DPoP` scheme and a proof.",
        TokenNotDpopBound => "Request a DPoP-bound token (send a DPoP proof to the token endpoint).",
        DpopMissing => "Send one `DPoP` header with a fresh proof on every request.",
        DpopMultiple => "Send exactly one `DPoP` header.",
        DpopMalformed => "Send the proof as a compact JWS with JSON header and payload.",
        DpopMissingMember => "Put `typ`, `alg`, `jwk` in the proof header and `jti`, `htm`, `htu`, `iat`, `ath` in its payload.",
        DpopBadTyp => "Set the proof's `typ` to `dpop+jwt`.",
        DpopAlgNotAllowed => "Sign the proof with an algorithm in `dpop.allowed_algs`.",
        DpopPrivateKey => "Put only the public key in the proof's `jwk`.",
        DpopBadJwk => "Use a valid public key that fits the proof's `alg`.",
        DpopBadSignature => "Sign the proof with the private key of its `jwk`.",
        DpopHtmMismatch => "Set `htm` to the request method.",
        DpopHtuMismatch => "Set `htu` to the URL the client called, without query or fragment (`diagnostics` names it).",
        DpopIatOutOfWindow => "Make a fresh proof per request; check the client clock.",
        DpopReplay => "Make a new proof (new `jti`) for every request, also for retries.",
        DpopReplayCacheFull => "Platform: raise `dpop.replay_cache`; retry after `Retry-After`.",
        DpopReplayStoreUnavailable => "Platform: check the replay store (`dpop.replay_store`, its cluster and leases); clients retry with a fresh proof.",
        DpopAthMismatch => "Set `ath` to base64url(SHA-256(access token)) of the token sent.",
        DpopJktMismatch => "Sign the proof with the key the token is bound to (`cnf.jkt`).",
        DpopNonceRequired => "Retry with the `DPoP-Nonce` value of this answer as the proof's `nonce`.",
        MtlsCertMissing => "Connect with the client certificate the token is bound to.",
        MtlsThumbprintMismatch => "Connect with the client certificate the token is bound to (`cnf.x5t#S256`).",
        InsufficientScope => "Request the scope in the challenge's `scope` attribute.",
        PatientContextMissing => "Request a token with a patient in context (`launch/patient`).",
        CompartmentEscape => "Only ask for the patient in context's own records.",
        UnsafeSearch => "Drop chained, `_has` or OR-list parameters the guard cannot confine; search within the patient.",
        AmbiguousReference => "Name the patient typed: `subject=Patient/<id>` or `subject:Patient=<id>` (or use the `patient` parameter).",
        QueryConstraintMissing => "Add the parameters the query-constrained scope names to the search.",
        ResponseOutsideGrant => "Ask only for records in your grant; the record is another patient's or outside the constraint.",
        ResponseOutsideGrantHidden => "As `response_outside_grant`; the policy hides it as 404 (`hide_foreign_as_not_found`).",
        ResponseTooLarge => "Page the search (`_count`), or raise `fhir.response_check.max_body_bytes`.",
        BundleEntryForbidden => "Remove the refused entry from the batch/transaction.",
        WriteOutsideCompartment => "Write resources that reference the patient in context.",
        UnknownFhirRequest => "Use a FHIR R4 REST path under `fhir.base_path` and a JSON body.",
        RequestTooLarge => "Send a smaller body, or raise `fhir.max_request_body_bytes`.",
        StoredReadFailed => "Platform: let the sidecar read the resource via `fhir.read_before_write_cluster`; retry.",
        StoredResourceMissing => "The resource does not exist: check the id.",
        PathNotCanonical => "Send the plain path the API serves: no `..`/`.` segments, `//`, `;` parameters, `\\`, encoded `/` `\\` `%`, control characters or non-ASCII.",
        PathTooLong => "Send a shorter path (at most 4096 bytes before `?`).",
        DpopKeyOverBudget => "Slow down: this client key has too many live proofs; retry after `Retry-After` (the platform sizes `dpop.replay_cache.max_live_proofs_per_key`).",
        DuplicateJsonMember => "Send JSON with each member name once per object (RFC 8259 §4, I-JSON).",
        UnsafePatchPath => "Patch with plain element paths (`Observation.status`), never compartment references, functions, indexers or JSON Pointer escapes.",
        ConditionalReference => "Reference resources by id (`Patient/123`), not by search (`Patient?identifier=...`).",
        UnsafeConditionalWrite => "Pin the conditional write's criteria to the patient in context, or write by id (no `id` in a conditional update body).",
        EverythingParameter => "Call `$everything` with `start`, `end`, `_since`, `_type` (granted types only), `_count` and paging; never `_mdm`.",
        BinarySecurityContextMissing => "Read the Binary as FHIR JSON (`Accept: application/fhir+json`), or have the API send `X-Security-Context`.",
        SubsettingHidesCompartment => "Send `_elements` in the query of a type search or read (not in a form body or Bundle entry); use `_summary=true`/`data` instead of `text`.",
        RouteNotListed => "Call a path and method the API lists in `routes[]`; API owner: add a rule for it, or set `unmatched: token_only` to let any other path through with a valid token.",
        AuthzScope => "Ask the issuer for the scope the challenge names (`scope=\"...\"`).",
        AuthzClaim => "Use a token whose claims meet the route's `authz.claims` (e.g. a higher security level); `diagnostics` names the condition.",
        AuthzDetails => "Ask for the `authorization_details` entry the route requires (e.g. the trust framework's purpose of use).",
        AuthzBinding => "Address the resource of your own organisation or person: the path or header must match the token's claim.",
        // A reason added elsewhere without its entry here: `tests/reason_codes_doc.rs` fails.
        #[allow(unreachable_patterns)]
        _ => FALLBACK,
    }
}

/// The text of a reason without its own [`fix`] entry (a test refuses it).
pub const FALLBACK: &str = "See docs/checks.md.";

fn class_name(c: Class) -> &'static str {
    match c {
        Class::NoCredentials => "challenge, no `error`",
        Class::InvalidRequest => "`invalid_request`",
        Class::InvalidToken => "`invalid_token`",
        Class::InvalidDpopProof => "`invalid_dpop_proof`",
        Class::UseDpopNonce => "`use_dpop_nonce` + `DPoP-Nonce`",
        Class::InsufficientScope => "`insufficient_scope` + `scope`",
        Class::Forbidden => "no challenge",
        Class::NotFound => "no challenge",
        Class::BadFhirRequest => "no challenge",
        Class::UnsupportedMediaType => "no challenge",
        Class::Unavailable => "`Retry-After`, no challenge",
        Class::TooManyRequests => "`Retry-After`, no challenge",
    }
}

fn cell(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// The whole `docs/reason-codes.md`.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Reason codes\n\n\
         <!-- Generated by `fapi-guard reason-codes --markdown` from filters/core/src/denial.rs \
         and filters/core/src/reason_doc.rs. Do not edit: the test filters/core/tests/reason_codes_doc.rs \
         fails when this file and the code differ. -->\n\n\
         Every refusal of the guard carries one stable reason code: in the FHIR `OperationOutcome` \
         (`issue[0].details.coding[0].code`, system `urn:fapi-guard:reason`) or, with the policy's \
         `api.denial_format: problem+json`, in the RFC 9457 problem details (`code`, and `type` \
         `urn:fapi-guard:reason:<code>`; `detail` is the text of `diagnostics`), in the log line \
         `fapi_guard.<filter>: denied reason=<code> status=<n>` and in the counter \
         `fapi_guard.<filter>.denied.<code>`. `issue[0].diagnostics` is `<code>: <facts>` where the \
         guard has safe facts to add (the expected `htu`, `exp` against the proxy clock, the unknown \
         `kid`, the missing scope); never token contents or patient data.\n\n\
         To see why a request got one of these, run `fapi-guard explain` (or the web page, `web/`).\n\n\
         | code | status | answer | meaning | what to fix |\n|---|---|---|---|---|\n",
    );
    for r in Reason::ALL {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            r.code(),
            r.status(),
            class_name(r.class()),
            cell(r.meaning()),
            cell(fix(*r)),
        ));
    }
    out
}
