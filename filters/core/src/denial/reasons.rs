//! The table of refusals: each [`Reason`] with its stable code, its meaning (the variant's doc
//! comment, `docs/reason-codes.md`) and its [`Class`], which decides how it is answered.

/// How a denial is answered. The class decides status and the `error` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// No credentials at all: 401 with the challenge and no `error` attribute (RFC 6750 §3.1).
    NoCredentials,
    /// 400 `invalid_request` (RFC 6750 §3.1): malformed request, token in query, repeated header.
    InvalidRequest,
    /// 401 `invalid_token` (RFC 6750 §3.1).
    InvalidToken,
    /// 401 `invalid_dpop_proof` (RFC 9449 §7.1).
    InvalidDpopProof,
    /// 401 `use_dpop_nonce` plus a `DPoP-Nonce` header (RFC 9449 §9).
    UseDpopNonce,
    /// 403 `insufficient_scope` with `scope="..."` (RFC 6750 §3.1).
    InsufficientScope,
    /// 403 without a challenge: the token is fine but this object is not the caller's.
    Forbidden,
    /// 404: the policy prefers not to reveal that a foreign resource exists.
    NotFound,
    /// 400 with an OperationOutcome: the request itself (its path, its FHIR interaction, its
    /// body) cannot be understood or decided.
    BadFhirRequest,
    /// 503: the guard cannot decide now (keys never loaded, replay cache full). Fail closed.
    Unavailable,
    /// 429 (RFC 6585 §4): this client is over its share; the caller adds `Retry-After`.
    TooManyRequests,
    /// 415 (RFC 9110 §15.5.16) with an OperationOutcome: a body in a media type the guard
    /// does not read as the server would.
    UnsupportedMediaType,
}

macro_rules! reasons {
    ($( $(#[doc = $doc:literal])* $variant:ident => $code:literal, $class:ident; )*) => {
        /// A stable, space-free reason code per refusal (logs, stats, `OperationOutcome`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason { $( $(#[doc = $doc])* $variant, )* }
        impl Reason {
            /// What the refusal means: the variant's doc comment (`docs/reason-codes.md`).
            pub fn meaning(self) -> &'static str {
                match self { $( Reason::$variant => concat!($($doc),*), )* }
            }
            /// Stable code, e.g. `bad_signature`.
            pub fn code(self) -> &'static str { match self { $( Reason::$variant => $code, )* } }
            /// How the refusal is answered.
            pub fn class(self) -> Class { match self { $( Reason::$variant => Class::$class, )* } }
            /// Every reason, for registering stats counters up front.
            pub const ALL: &'static [Reason] = &[ $( Reason::$variant, )* ];
        }
    };
}

reasons! {
    // ---- §1 access token ----
    /// No `Authorization` header.
    MissingToken => "missing_token", NoCredentials;
    /// More than one `Authorization` header (RFC 6750 §3.1).
    MultipleAuthorization => "multiple_authorization", InvalidRequest;
    /// `access_token` in the query string (RFC 6750 §2.3 is not allowed; FAPI 2.0 §5.3.4).
    TokenInQuery => "token_in_query", InvalidRequest;
    /// Scheme other than the ones the policy allows (e.g. `Bearer` on a DPoP-only API, `Basic`).
    SchemeNotAllowed => "scheme_not_allowed", InvalidToken;
    /// Not a compact JWS, bad base64url, header/payload not JSON objects.
    MalformedToken => "malformed_token", InvalidToken;
    /// `typ` is not `at+jwt` (RFC 9068 §2.1).
    BadTyp => "bad_typ", InvalidToken;
    /// `alg` not on the allow-list, `none` or HMAC (RFC 8725 §3.1).
    AlgNotAllowed => "alg_not_allowed", InvalidToken;
    /// `crit` names an extension the guard does not implement (RFC 7515 §4.1.11).
    UnsupportedCrit => "unsupported_crit", InvalidToken;
    /// `iss` is not a configured issuer (RFC 9068 §4).
    UnknownIssuer => "unknown_issuer", InvalidToken;
    /// No key in the issuer's JWKS matches `kid`/`alg`.
    UnknownKey => "unknown_key", InvalidToken;
    /// Key type does not fit `alg`, or RSA shorter than 2048 bits (FAPI 2.0 §5.4).
    WeakOrMismatchedKey => "weak_or_mismatched_key", InvalidToken;
    /// Signature does not verify.
    BadSignature => "bad_signature", InvalidToken;
    /// `exp` has passed (beyond skew).
    Expired => "expired", InvalidToken;
    /// `nbf` is in the future (beyond skew).
    NotYetValid => "not_yet_valid", InvalidToken;
    /// `iat` is in the future (beyond skew).
    IssuedInFuture => "iat_in_future", InvalidToken;
    /// An RFC 9068 §2.2 required claim is missing or of the wrong type.
    MissingClaim => "missing_claim", InvalidToken;
    /// `aud` does not contain this API's audience (RFC 9068 §4).
    WrongAudience => "wrong_audience", InvalidToken;
    /// The policy wants this API as the only audience (HelseID practice).
    AudienceNotSole => "audience_not_sole", InvalidToken;
    /// The issuer's keys have never been loaded: cannot decide, fail closed.
    KeysUnavailable => "jwks_unavailable", Unavailable;
    /// A filter after the token filter found no verified token for a route that needs one.
    NoVerifiedToken => "no_verified_token", InvalidToken;

    // ---- every request, every route: the one canonical path (`crate::path`) ----
    /// The `:path` holds a form a server could read as another path (dot-segments, `;`,
    /// encoded `/` or `\`, `%25`, controls, non-ASCII, ...): RFC 3986 §5.2.4, §6.2.2.
    PathNotCanonical => "path_not_canonical", BadFhirRequest;
    /// The path is longer than `path::MAX_PATH_BYTES`.
    PathTooLong => "path_too_long", BadFhirRequest;
    /// A method-override header (`X-HTTP-Method-Override`, `X-HTTP-Method`,
    /// `X-Method-Override`) or parameter (`_method`, `x-http-method-override`, ...) that the
    /// server named by `fhir.server` may execute instead of the request method.
    MethodOverride => "method_override", BadFhirRequest;

    // ---- §2 DPoP / sender constraint ----
    /// §2.14 / RFC 9449 §7.2: a DPoP-bound token (`cnf.jkt`) presented as `Bearer`.
    BearerDowngrade => "bearer_downgrade", InvalidToken;
    /// Policy demands DPoP but the token has no `cnf.jkt`.
    TokenNotDpopBound => "token_not_dpop_bound", InvalidToken;
    /// §2.1: no `DPoP` header.
    DpopMissing => "dpop_missing", InvalidDpopProof;
    /// §2.1: more than one `DPoP` header.
    DpopMultiple => "dpop_multiple", InvalidDpopProof;
    /// §2.1: not a well-formed compact JWS.
    DpopMalformed => "dpop_malformed", InvalidDpopProof;
    /// §2.2: a required header member or claim is missing.
    DpopMissingMember => "dpop_missing_member", InvalidDpopProof;
    /// §2.3: `typ` is not `dpop+jwt`.
    DpopBadTyp => "dpop_bad_typ", InvalidDpopProof;
    /// §2.4: `alg` not asymmetric / not allowed.
    DpopAlgNotAllowed => "dpop_alg_not_allowed", InvalidDpopProof;
    /// §2.5: `jwk` carries private members.
    DpopPrivateKey => "dpop_private_key", InvalidDpopProof;
    /// §2.5: `jwk` is not a usable public key, or does not fit `alg`.
    DpopBadJwk => "dpop_bad_jwk", InvalidDpopProof;
    /// §2.6: signature does not verify.
    DpopBadSignature => "dpop_bad_signature", InvalidDpopProof;
    /// §2.7: `htm` differs from the request method.
    DpopHtmMismatch => "dpop_htm_mismatch", InvalidDpopProof;
    /// §2.8: `htu` differs from the request URI.
    DpopHtuMismatch => "dpop_htu_mismatch", InvalidDpopProof;
    /// §2.9: `iat` outside the acceptance window.
    DpopIatOutOfWindow => "dpop_iat_window", InvalidDpopProof;
    /// §2.10: `jti` seen before within the window.
    DpopReplay => "dpop_replay", InvalidDpopProof;
    /// §2.10: the replay cache is full of live entries; refusing beats accepting replays.
    DpopReplayCacheFull => "dpop_replay_cache_full", Unavailable;
    /// §2.10, `replay_scope: api`: the store shared by every replica did not record the proof
    /// (unreachable, timed out, no lease, an unknown answer); refusing beats a second use.
    DpopReplayStoreUnavailable => "dpop_replay_store_unavailable", Unavailable;
    /// §2.10, fairness: this proof key already holds its budget of live replay-cache entries
    /// (`docs/dpop.md`); the proof is not recorded, other clients are unaffected.
    DpopKeyOverBudget => "dpop_key_over_budget", TooManyRequests;
    /// §2.11: `ath` does not match the access token.
    DpopAthMismatch => "dpop_ath_mismatch", InvalidDpopProof;
    /// §2.12: the proof key's thumbprint differs from `cnf.jkt`.
    DpopJktMismatch => "dpop_jkt_mismatch", InvalidToken;
    /// §2.13: no nonce, or not a current one.
    DpopNonceRequired => "use_dpop_nonce", UseDpopNonce;
    /// RFC 8705 §3: `cnf.x5t#S256` but no client certificate on the connection.
    MtlsCertMissing => "mtls_cert_missing", InvalidToken;
    /// RFC 8705 §3: the client certificate's thumbprint differs from `cnf.x5t#S256`.
    MtlsThumbprintMismatch => "mtls_x5t_mismatch", InvalidToken;

    // ---- §3 SMART scopes / FHIR ----
    /// The granted scopes do not allow this interaction on this type.
    InsufficientScope => "insufficient_scope", InsufficientScope;
    /// A `patient/` grant but the token has no patient claim.
    PatientContextMissing => "patient_context_missing", InsufficientScope;
    /// The request targets another patient's compartment.
    CompartmentEscape => "compartment_escape", Forbidden;
    /// A search the guard cannot confine (chained, `_has`, `_include` out of the compartment, OR-lists).
    UnsafeSearch => "unsafe_search", Forbidden;
    /// A search names the patient by bare id on a reference parameter that can target several types (`subject=<id>`): the server may read another type's resource.
    AmbiguousReference => "ambiguous_reference", Forbidden;
    /// A query-constrained scope's parameters are missing from the search.
    QueryConstraintMissing => "query_constraint_missing", InsufficientScope;
    /// The response resource does not belong to the patient / match the constraint.
    ResponseOutsideGrant => "response_outside_grant", Forbidden;
    /// Same as above, answered 404 where the policy hides existence.
    ResponseOutsideGrantHidden => "response_outside_grant", NotFound;
    /// The response to check is larger than the policy's buffer limit.
    ResponseTooLarge => "response_too_large", Forbidden;
    /// A batch/transaction entry is not allowed; the whole bundle is refused.
    BundleEntryForbidden => "bundle_entry_forbidden", Forbidden;
    /// A written resource does not reference the context patient.
    WriteOutsideCompartment => "write_outside_compartment", Forbidden;
    /// Unknown or malformed FHIR path, or a body the guard must read but cannot parse.
    UnknownFhirRequest => "unknown_fhir_request", BadFhirRequest;
    /// Request body over the policy's limit where the body must be read.
    RequestTooLarge => "request_too_large", BadFhirRequest;
    /// Read before write: the stored resource could not be read (error status, timeout,
    /// unparsable body); the write is refused.
    StoredReadFailed => "stored_read_failed", Unavailable;
    /// Read before write: a patch or delete by id names no stored resource.
    StoredResourceMissing => "stored_resource_missing", NotFound;
    /// A search-control or compartment parameter in a non-canonical case (`_INCLUDE`,
    /// `Patient`), or a single-valued control parameter repeated (`_type` twice), which
    /// servers read differently (`fhir.server`).
    ParameterNameAmbiguous => "parameter_name_ambiguous", BadFhirRequest;
    /// A non-empty `_search` body whose Content-Type is not
    /// `application/x-www-form-urlencoded` (FHIR R4 §3.1.1.0): servers differ on reading it.
    SearchBodyNotForm => "search_body_not_form", UnsupportedMediaType;
    /// `access_token` in a form body (RFC 6750 §2.2 is not allowed; FAPI 2.0 §5.3.4).
    TokenInBody => "token_in_body", InvalidRequest;
    /// A patient-grant searchset whose `total` counts more than the entries the guard could
    /// check, while the patient pin was not read by the server: a count oracle.
    SearchTotalUnchecked => "search_total_unchecked", Forbidden;
    /// A FHIR request body the guard reads has a duplicate JSON member name (RFC 8259 §4,
    /// RFC 7493 §2.3): the guard and the API could read different values.
    DuplicateJsonMember => "duplicate_json_member", BadFhirRequest;
    /// A patch under a patient or constrained grant whose `path`/`from` is not a plain element
    /// path (FHIRPath functions, indexers, JSON Pointer escapes), or names an element that
    /// places the resource in a compartment.
    UnsafePatchPath => "unsafe_patch_path", Forbidden;
    /// A conditional reference (`Patient?identifier=...`) in a write under a patient or
    /// constrained grant: the guard cannot tell which resource the server will resolve it to.
    ConditionalReference => "conditional_reference", Forbidden;
    /// A conditional create/update/patch/delete that cannot be shown to stay in the patient's
    /// compartment (body `id` on a conditional update, stored matches outside it, too many matches).
    UnsafeConditionalWrite => "unsafe_conditional_write", Forbidden;
    /// `Patient/<pid>/$everything` under a patient grant with a parameter that widens the
    /// set (`_mdm`: MDM-linked patients) or one the guard cannot show to narrow it, or a
    /// `_type` naming a type not served.
    EverythingParameter => "everything_parameter", Forbidden;
    /// A Binary read served as raw bytes (R4 binary.html, non-FHIR `Accept`) without the
    /// `X-Security-Context` header: the guard cannot tell whose it is.
    BinarySecurityContextMissing => "binary_security_context_missing", Forbidden;
    /// `_summary`/`_elements` would have the server leave out the elements the response check
    /// reads (compartment or constraint elements; FHIR R4 search.html#summary, #elements) and
    /// the request cannot be rewritten to keep them (`_summary=text`, `_elements` in a form
    /// body or a Bundle entry, a search whose types are not known).
    SubsettingHidesCompartment => "subsetting_hides_compartment", BadFhirRequest;

    // ---- §4 per-route authorization (`authz` of a route rule) ----
    /// No `routes[]` rule matches the method and path, and the policy says `unmatched: deny`
    /// (only listed routes are served; decided before the token is read).
    RouteNotListed => "route_not_listed", Forbidden;
    /// A scope of `scopes.all_of` / every one of `scopes.any_of` is not granted (RFC 6750 §3.1).
    AuthzScope => "authz_missing_scope", InsufficientScope;
    /// A `claims[]` condition does not hold (missing claim, wrong value, below a level).
    AuthzClaim => "authz_claim", Forbidden;
    /// No RFC 9396 `authorization_details` entry of the type satisfies the conditions.
    AuthzDetails => "authz_authorization_details", Forbidden;
    /// A path parameter or header is not the token's (object-level authorisation).
    AuthzBinding => "authz_binding", Forbidden;
}
