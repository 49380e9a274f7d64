//! How the server behind the guard reads a request: the policy's `fhir.server` profile
//! (docs/checks.md "Reading the request as the server does"). The guard decides on the
//! server's reading, not its own: where known servers read a form differently and the guard
//! cannot tell which one is behind it (`generic`, the default, and every API without a
//! `fhir` section), it refuses with a named reason.
//!
//! Each rule cites the server source it was read from. Where no source was read, the
//! profile keeps the `generic` rule (refuse), which is safe whatever the server does.

use serde::Deserialize;

use super::compartment::PATIENT_COMPARTMENT;
use super::query::{percent_decode, Param};

/// The upstream's family (`fhir.server`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Server {
    #[default]
    Generic,
    Hapi,
    Microsoft,
    Ibm,
    Firely,
    Medplum,
}

/// How the server compares search parameter names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameCase {
    /// Byte-exact: `_INCLUDE` is another (unknown) parameter, which the server ignores or
    /// refuses; the guard decides on the exact names too.
    Exact,
    /// Case-insensitive: `_INCLUDE` is `_include`; the guard reads it so.
    Insensitive,
    /// Not known: a case variant of a parameter the guard reads is refused.
    Refuse,
}

/// How the server reads a `POST _search` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchBody {
    /// Only `application/x-www-form-urlencoded` (exact lower-case media type) is read as
    /// parameters; a case variant or a look-alike ([`BodyKind`]) is refused; any other body
    /// is ignored and the guard decides on the query alone.
    FormOnly,
    /// As `FormOnly`, but the media type is compared case-insensitively, and
    /// `multipart/form-data` is a form too (refused: the guard does not parse it).
    FormOrMultipart,
    /// Not known: a non-empty body that is not exactly a form is refused.
    Refuse,
}

/// What one server honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Method-override headers (lower case) the server executes instead of `:method`.
    pub override_headers: &'static [&'static str],
    /// Method-override parameters (query, and form bodies) the server executes.
    pub override_params: &'static [&'static str],
    pub names: NameCase,
    /// A single-valued control parameter may be repeated: the guard checks every occurrence
    /// (`_type`, `_include` values are all decided), so any one the server picks is allowed.
    pub repeats_ok: bool,
    pub search_body: SearchBody,
}

/// Every method-override header some stack honours (Express `method-override`, Spring
/// `HiddenHttpMethodFilter`, ASP.NET Core `HttpMethodOverrideMiddleware`, IBM below).
pub const OVERRIDE_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];
/// Every method-override parameter some stack honours (Rails/Laravel/Spring `_method`, IBM).
pub const OVERRIDE_PARAMS: &[&str] = &[
    "_method",
    "x-http-method-override",
    "x-method-override",
    "x-http-method",
];

const GENERIC: Profile = Profile {
    override_headers: OVERRIDE_HEADERS,
    override_params: OVERRIDE_PARAMS,
    names: NameCase::Refuse,
    repeats_ok: false,
    search_body: SearchBody::Refuse,
};

impl Server {
    pub fn profile(self) -> Profile {
        match self {
            Server::Generic => GENERIC,
            // hapi-fhir-server `RestfulServer#service` dispatches on `getMethod()` alone (no
            // override); `RestfulServer#handleRequest` parses the body as parameters only for
            // POST with a Content-Type starting `application/x-www-form-urlencoded`
            // (`UrlUtil.parseQueryStrings`) into a case-sensitive map.
            Server::Hapi => Profile {
                override_headers: &[],
                override_params: &[],
                names: NameCase::Exact,
                repeats_ok: true,
                search_body: SearchBody::FormOnly,
            },
            // microsoft/fhir-server is ASP.NET Core: `QueryCollection` keys compare
            // case-insensitively (`StringComparer.OrdinalIgnoreCase`) and repeated keys merge;
            // `FhirController` adds form parameters for `_search` only when
            // `Request.HasFormContentType` (urlencoded or multipart, any case). No source read
            // shows it ignores override headers: refused as under `generic`.
            Server::Microsoft => Profile {
                override_headers: OVERRIDE_HEADERS,
                override_params: OVERRIDE_PARAMS,
                names: NameCase::Insensitive,
                repeats_ok: true,
                search_body: SearchBody::FormOrMultipart,
            },
            // LinuxForHealth FHIR `FHIRHttpServletRequestWrapper`: `initHeaderNameMappings`
            // maps the headers `x-method-override` and `x-http-method-override` to query (and,
            // through `getParameter`, form) parameters of the same names, and `getMethod`
            // returns the override; the constructor reads a form only when the Content-Type
            // contains `application/x-www-form-urlencoded`. JAX-RS `UriInfo` parameter maps
            // are case-sensitive.
            Server::Ibm => Profile {
                override_headers: &["x-method-override", "x-http-method-override"],
                override_params: &["x-method-override", "x-http-method-override"],
                names: NameCase::Exact,
                repeats_ok: true,
                search_body: SearchBody::FormOnly,
            },
            // Firely Server and Medplum: no source read for these rules; `generic` holds.
            Server::Firely | Server::Medplum => GENERIC,
        }
    }
}

/// The media type of a Content-Type value (before `;`, trimmed), and whether it is a form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/x-www-form-urlencoded` exactly (lower case).
    Form,
    /// The same media type in another case (RFC 9110 §8.3.1: case-insensitive, yet HAPI's
    /// `startsWith` and IBM's `contains` compare bytes).
    FormCaseVariant,
    Multipart,
    /// Another media type whose Content-Type value still holds the form's name
    /// (`application/x-www-form-urlencoded-x`, `text/plain; a=application/x-www-form-urlencoded`):
    /// HAPI's `contentType.startsWith(CT_X_FORM_URLENCODED)` (`RestfulServer#handleRequest`)
    /// and IBM's `contains` read such a body as a form, a media-type parser does not.
    FormLookalike,
    Other,
}

impl BodyKind {
    /// `application/x-www-form-urlencoded` in any case, or a value that some server reads so.
    pub fn is_form(self) -> bool {
        matches!(
            self,
            BodyKind::Form | BodyKind::FormCaseVariant | BodyKind::FormLookalike
        )
    }
}

pub fn body_kind(content_type: Option<&str>) -> BodyKind {
    let media = content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    if media == "application/x-www-form-urlencoded" {
        BodyKind::Form
    } else if media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        BodyKind::FormCaseVariant
    } else if media.eq_ignore_ascii_case("multipart/form-data") {
        BodyKind::Multipart
    } else if content_type
        .unwrap_or("")
        .to_ascii_lowercase()
        .contains("x-www-form-urlencoded")
    {
        BodyKind::FormLookalike
    } else {
        BodyKind::Other
    }
}

/// How the server reads a non-empty `_search` body of this kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyReading {
    /// As form parameters: the guard parses and decides on them.
    Form,
    /// Ignored by the server: the guard decides on the query alone.
    Ignored,
    /// Servers differ, or the guard cannot parse what the server reads: refuse.
    Refuse,
}

impl Profile {
    pub fn search_body(&self, kind: BodyKind) -> BodyReading {
        match (self.search_body, kind) {
            (_, BodyKind::Form) => BodyReading::Form,
            // Read as a form by byte comparisons, not by media-type parsers: servers differ.
            (_, BodyKind::FormLookalike) => BodyReading::Refuse,
            (SearchBody::Refuse, _) => BodyReading::Refuse,
            // HAPI compares bytes, but with `setIgnoreServerParsedRequestParameters(false)` the
            // servlet container's own form parsing decides: a case variant is refused.
            (SearchBody::FormOnly, BodyKind::FormCaseVariant) => BodyReading::Refuse,
            (SearchBody::FormOnly, _) => BodyReading::Ignored,
            (SearchBody::FormOrMultipart, BodyKind::FormCaseVariant) => BodyReading::Form,
            (SearchBody::FormOrMultipart, BodyKind::Multipart) => BodyReading::Refuse,
            (SearchBody::FormOrMultipart, BodyKind::Other) => BodyReading::Ignored,
        }
    }

    /// Whether a form (query string or body) carries an override parameter this server
    /// executes. Names are compared decoded and in any case (`%5Fmethod`, `_METHOD`).
    pub fn overrides_in_form(&self, form: &str) -> bool {
        form_has_name(form, self.override_params)
    }

    /// Whether the request carries an override this server executes: a header (`present`
    /// says whether a lower-case header name is on the request) or a query parameter.
    pub fn overrides(&self, present: &dyn Fn(&str) -> bool, query: &str) -> bool {
        self.override_headers.iter().any(|h| present(h)) || self.overrides_in_form(query)
    }

    /// Reads parameter names as the server does (FHIR R4 §3.1.1.1: names are case-sensitive,
    /// but not every server keeps them so). `Err` names what is ambiguous.
    pub fn read_names(&self, params: &mut [Param]) -> Result<(), &'static str> {
        for p in params.iter_mut() {
            let base = p.base_name();
            let Some(canonical) = known_name(base) else {
                continue;
            };
            if canonical == base {
                continue;
            }
            match self.names {
                NameCase::Exact => {}
                NameCase::Insensitive => {
                    // Same length (ASCII case only): the modifier after it is kept.
                    let n = canonical.len();
                    p.name.replace_range(..n, canonical);
                }
                NameCase::Refuse => {
                    return Err("a search parameter name is not in its canonical case")
                }
            }
        }
        if !self.repeats_ok {
            for (i, p) in params.iter().enumerate() {
                let single = SINGLE_VALUED.contains(&p.base_name());
                if single
                    && params
                        .iter()
                        .take(i)
                        .any(|q| q.base_name() == p.base_name())
                {
                    return Err("a single-valued search control parameter is repeated");
                }
            }
        }
        Ok(())
    }
}

/// Whether a query string or form body has a parameter named one of `names`, the name read as
/// servers read it: percent-decoded (`%5Fmethod`, `%61ccess_token`), in any case. A name with
/// a broken escape is compared as sent.
pub fn form_has_name(form: &str, names: &[&str]) -> bool {
    form.split('&').any(|pair| {
        let raw = pair.split('=').next().unwrap_or("");
        let name = percent_decode(raw).unwrap_or_else(|| raw.to_string());
        names.iter().any(|n| name.trim().eq_ignore_ascii_case(n))
    })
}

/// Whether a query string or `application/x-www-form-urlencoded` body carries `access_token`
/// (RFC 6750 §2.2, §2.3), its name read as a server reads it: percent-decoded
/// (`%61ccess_token`, `access%5Ftoken`), in any case. A name with a broken escape is
/// compared as sent.
pub fn form_has_access_token(form: &str) -> bool {
    form_has_name(form, &["access_token"])
}

/// Search-result and control parameters (FHIR R4 §3.1.1.5, §3.1.1.4, `_getpages` paging).
const RESERVED: &[&str] = &[
    "_id",
    "_lastUpdated",
    "_tag",
    "_profile",
    "_security",
    "_source",
    "_text",
    "_content",
    "_list",
    "_has",
    "_type",
    "_query",
    "_filter",
    "_include",
    "_revinclude",
    "_sort",
    "_count",
    "_offset",
    "_summary",
    "_elements",
    "_total",
    "_contained",
    "_containedType",
    "_format",
    "_pretty",
    "_since",
    "_at",
    "_getpages",
    "_getpagesoffset",
    "_mdm",
];

/// Control parameters a server reads once (FHIR R4 §3.1.1.5): repeated, servers keep the
/// first, the last, or merge.
const SINGLE_VALUED: &[&str] = &[
    "_type",
    "_count",
    "_offset",
    "_summary",
    "_elements",
    "_sort",
    "_total",
    "_contained",
    "_containedType",
    "_format",
];

/// The canonical spelling of a reserved or compartment (pin) parameter name that `name`
/// equals in any case.
fn known_name(name: &str) -> Option<&'static str> {
    if let Some(r) = RESERVED.iter().find(|r| r.eq_ignore_ascii_case(name)) {
        return Some(r);
    }
    if "patient".eq_ignore_ascii_case(name) {
        return Some("patient");
    }
    PATIENT_COMPARTMENT
        .iter()
        .flat_map(|(_, ps)| ps.iter())
        .map(|(n, _)| *n)
        .find(|n| n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Vec<Param> {
        crate::fhir::query::parse(q).unwrap_or_default()
    }

    #[test]
    fn generic_refuses_every_override_form() {
        let g = Server::Generic.profile();
        for h in OVERRIDE_HEADERS {
            assert!(g.overrides(&|n| n == *h, ""), "{h}");
        }
        for q in [
            "_method=DELETE",
            "X-HTTP-Method-Override=DELETE",
            "a=1&x-method-override=PUT",
            "%5Fmethod=DELETE",
            "%78-http-method=DELETE",
            "x%2Dmethod%2Doverride=PUT",
        ] {
            assert!(g.overrides(&|_| false, q), "{q}");
        }
        assert!(!g.overrides(&|_| false, "patient=1&_count=5"));
    }

    #[test]
    fn profiles_honour_what_their_source_does() {
        let hapi = Server::Hapi.profile();
        assert!(!hapi.overrides(&|_| true, "_method=DELETE&x-method-override=PUT"));
        let ibm = Server::Ibm.profile();
        assert!(ibm.overrides(&|n| n == "x-method-override", ""));
        assert!(ibm.overrides(&|_| false, "x-method-override=DELETE"));
        assert!(!ibm.overrides(&|n| n == "x-http-method", "_method=DELETE"));
        for s in [Server::Microsoft, Server::Firely, Server::Medplum] {
            assert!(s.profile().overrides(&|n| n == "x-http-method", ""));
        }
    }

    #[test]
    fn names_by_case_rule() {
        let mut p = params("_INCLUDE=Observation:subject&Patient=1");
        assert!(Server::Generic.profile().read_names(&mut p).is_err());
        let mut p = params("_Type=Patient");
        assert!(Server::Firely.profile().read_names(&mut p).is_err());
        let mut p = params("_INCLUDE=Observation:subject&SUBJECT:Patient=1&_lastUpdated=gt1");
        assert!(Server::Microsoft.profile().read_names(&mut p).is_ok());
        let names: Vec<&str> = p.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["_include", "subject:Patient", "_lastUpdated"]);
        let mut p = params("_INCLUDE=x");
        assert!(Server::Hapi.profile().read_names(&mut p).is_ok());
        assert_eq!(p.first().map(|x| x.name.as_str()), Some("_INCLUDE"));
        // Canonical names and unknown parameters pass everywhere.
        let mut p = params("_include=Observation:subject&code=1&my-param=2");
        assert!(Server::Generic.profile().read_names(&mut p).is_ok());
    }

    #[test]
    fn repeats_refused_under_generic_only() {
        for q in [
            "_type=A&_type=B",
            "_count=5&_count=0",
            "_summary=count&_summary=false",
        ] {
            let mut p = params(q);
            assert!(Server::Generic.profile().read_names(&mut p).is_err(), "{q}");
            let mut p = params(q);
            assert!(Server::Hapi.profile().read_names(&mut p).is_ok(), "{q}");
        }
        // Repeated search parameters AND together (FHIR R4 §3.1.1.0): fine.
        let mut p = params("date=ge1&date=le2&_include=A:b&_include=A:c");
        assert!(Server::Generic.profile().read_names(&mut p).is_ok());
    }

    #[test]
    fn search_bodies_by_media_type() {
        use BodyKind::*;
        assert_eq!(
            body_kind(Some("application/x-www-form-urlencoded; charset=utf-8")),
            Form
        );
        assert_eq!(
            body_kind(Some("Application/X-WWW-Form-Urlencoded")),
            FormCaseVariant
        );
        assert_eq!(
            body_kind(Some("multipart/form-data; boundary=x")),
            Multipart
        );
        assert_eq!(body_kind(Some("application/json")), Other);
        assert_eq!(body_kind(None), Other);
        for lookalike in [
            "application/x-www-form-urlencodedx",
            "text/plain; x=application/x-www-form-urlencoded",
            "Application/X-WWW-Form-Urlencoded-Foo",
        ] {
            assert_eq!(body_kind(Some(lookalike)), FormLookalike, "{lookalike}");
            for s in [
                Server::Generic,
                Server::Hapi,
                Server::Microsoft,
                Server::Ibm,
            ] {
                assert_eq!(s.profile().search_body(FormLookalike), BodyReading::Refuse);
            }
        }
        let g = Server::Generic.profile();
        assert_eq!(g.search_body(Form), BodyReading::Form);
        assert_eq!(g.search_body(Other), BodyReading::Refuse);
        assert_eq!(g.search_body(FormCaseVariant), BodyReading::Refuse);
        let h = Server::Hapi.profile();
        assert_eq!(h.search_body(Other), BodyReading::Ignored);
        assert_eq!(h.search_body(FormCaseVariant), BodyReading::Refuse);
        let m = Server::Microsoft.profile();
        assert_eq!(m.search_body(FormCaseVariant), BodyReading::Form);
        assert_eq!(m.search_body(Multipart), BodyReading::Refuse);
        assert_eq!(m.search_body(Other), BodyReading::Ignored);
    }
}
