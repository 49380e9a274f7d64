//! Which FHIR REST interaction a request is (FHIR R4 RESTful API §3.1.0, "Summary" table),
//! from method + path + query. Anything that does not parse as one is refused (docs/checks.md §3).

use super::query::{self, Param};
use super::scope::is_resource_type;

/// FHIR R4 RESTful interactions, plus the public endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    /// `GET [base]/metadata` (public).
    Capabilities,
    /// `GET [base]/.well-known/smart-configuration` (public, SMART App Launch §"Discovery").
    SmartConfiguration,
    Read,
    Vread,
    Update,
    Patch,
    Delete,
    Create,
    HistoryInstance,
    HistoryType,
    HistorySystem,
    SearchType,
    SearchSystem,
    /// `GET [base]/Patient/[id]/[type]` (FHIR R4 §3.1.0.6.1 compartment search).
    SearchCompartment,
    /// `[base]/$op`, `[base]/[type]/$op`, `[base]/[type]/[id]/$op`.
    Operation,
    /// `POST [base]` with a batch or transaction Bundle.
    Batch,
    /// `GET [base]?_getpages=...`: a page of an earlier search, by the server's own link
    /// (HAPI FHIR's paging link, [`is_paging_link`]).
    Page,
}

impl Interaction {
    pub fn name(self) -> &'static str {
        match self {
            Interaction::Capabilities => "capabilities",
            Interaction::SmartConfiguration => "smart-configuration",
            Interaction::Read => "read",
            Interaction::Vread => "vread",
            Interaction::Update => "update",
            Interaction::Patch => "patch",
            Interaction::Delete => "delete",
            Interaction::Create => "create",
            Interaction::HistoryInstance => "history-instance",
            Interaction::HistoryType => "history-type",
            Interaction::HistorySystem => "history-system",
            Interaction::SearchType => "search-type",
            Interaction::SearchSystem => "search-system",
            Interaction::SearchCompartment => "search-compartment",
            Interaction::Operation => "operation",
            Interaction::Batch => "batch",
            Interaction::Page => "page",
        }
    }
}

/// Level of an operation invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    System,
    Type,
    Instance,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::System => "system",
            Level::Type => "type",
            Level::Instance => "instance",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "system" => Some(Level::System),
            "type" => Some(Level::Type),
            "instance" => Some(Level::Instance),
            _ => None,
        }
    }
}

/// A classified FHIR request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirRequest {
    pub method: String,
    pub interaction: Interaction,
    /// The type acted on; for a compartment search the target type (`None` = `*`).
    pub resource_type: Option<String>,
    pub id: Option<String>,
    pub version: Option<String>,
    /// Compartment search: the compartment owner's id (`Patient/{id}/...`).
    pub compartment_id: Option<String>,
    /// Conditional update / patch / delete (criteria in the query) or create (`If-None-Exist`).
    pub conditional: bool,
    /// Search via `POST .../_search` (more parameters in the form body).
    pub via_post: bool,
    /// Operation name without `$`, and level.
    pub operation: Option<(String, Level)>,
    /// Decoded query parameters.
    pub params: Vec<Param>,
}

impl FhirRequest {
    /// `conditional-update`, `read`, `operation $everything` ... for tables and messages.
    pub fn label(&self) -> String {
        let base = self.interaction.name();
        if let Some((op, level)) = &self.operation {
            return format!("operation-{} ${op}", level.name());
        }
        if self.conditional {
            format!("conditional-{base}")
        } else {
            base.to_string()
        }
    }
}

/// FHIR R4 `id` datatype: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_fhir_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && s != "."
        && s != ".."
}

fn op_name(seg: &str) -> Option<String> {
    let name = seg.strip_prefix('$')?;
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then(|| name.to_string())
}

/// HAPI FHIR's paging link: `[base]?_getpages=<search id>&_getpagesoffset=N&_count=M&
/// _bundletype=searchset` (or `&_pageId=<page id>` for a cached page). HAPI's `RestfulServer`
/// hands any request at the base carrying `_getpages` (`Constants.PARAM_PAGINGACTION`) to
/// `PageMethodBinding`, which reads only these parameters; at the base a `_getpages` cannot
/// mean anything else, so it is recognised whatever the upstream (a `fhir.server` profile
/// would gate the other servers' forms here).
pub fn is_paging_link(params: &[Param]) -> bool {
    params.iter().any(|p| p.name == PAGING_ACTION)
}

/// `Constants.PARAM_PAGINGACTION` (HAPI FHIR).
pub const PAGING_ACTION: &str = "_getpages";

/// The parameters HAPI FHIR reads on a paging link (`Constants.PARAM_PAGINGACTION`,
/// `PARAM_PAGINGOFFSET`, `PARAM_PAGEID`, `PARAM_COUNT`, `PARAM_BUNDLETYPE`, `PARAM_FORMAT`,
/// `PARAM_PRETTY`).
pub const PAGING_PARAMS: &[&str] = &[
    PAGING_ACTION,
    "_getpagesoffset",
    "_pageId",
    "_count",
    "_bundletype",
    "_format",
    "_pretty",
];

/// Normalises a base path: leading `/`, no trailing `/` (except the root itself).
pub fn normalise_base(base: &str) -> String {
    let t = base.trim_end_matches('/');
    if t.is_empty() {
        "/".to_string()
    } else {
        t.to_string()
    }
}

/// Classifies `method` + `path_with_query` under the FHIR `base` (normalised).
/// `Err` carries a short reason (no request content).
pub fn classify(base: &str, method: &str, path_with_query: &str) -> Result<FhirRequest, String> {
    if path_with_query.contains('#') {
        return Err("fragment in request target".into());
    }
    let (path, q) = match path_with_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path_with_query, ""),
    };
    let params = query::parse(q).ok_or("malformed query string")?;
    let rest = if base == "/" {
        path.strip_prefix('/')
    } else {
        path.strip_prefix(base).and_then(|r| {
            if r.is_empty() {
                Some("")
            } else {
                r.strip_prefix('/')
            }
        })
    }
    .ok_or("path is outside the FHIR base")?;
    let segs: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').collect()
    };
    if segs.iter().any(|s| s.is_empty()) {
        return Err("empty path segment".into());
    }
    if segs.iter().any(|s| s.contains(['%', ';', '\\'])) {
        // Encoded or parameterised path segments are never valid FHIR ids/types/ops.
        return Err("encoded or parameterised path segment".into());
    }
    let m = match method {
        "HEAD" => "GET",
        other => other,
    };
    let mut req = FhirRequest {
        method: method.to_string(),
        interaction: Interaction::Read,
        resource_type: None,
        id: None,
        version: None,
        compartment_id: None,
        conditional: false,
        via_post: false,
        operation: None,
        params,
    };
    let has_query = !req.params.is_empty();
    let set = |mut r: FhirRequest, i: Interaction| {
        r.interaction = i;
        r
    };
    let typ = |s: &str| is_resource_type(s).then(|| s.to_string());
    let id = |s: &str| is_fhir_id(s).then(|| s.to_string());
    let unknown = || Err(format!("{method} is not a FHIR interaction on this path"));

    match segs.as_slice() {
        [] => match m {
            "GET" if is_paging_link(&req.params) => Ok(set(req, Interaction::Page)),
            "GET" => Ok(set(req, Interaction::SearchSystem)),
            "POST" => Ok(set(req, Interaction::Batch)),
            _ => unknown(),
        },
        ["metadata"] => match m {
            "GET" => Ok(set(req, Interaction::Capabilities)),
            _ => unknown(),
        },
        [".well-known", "smart-configuration"] => match m {
            "GET" => Ok(set(req, Interaction::SmartConfiguration)),
            _ => unknown(),
        },
        ["_history"] => match m {
            "GET" => Ok(set(req, Interaction::HistorySystem)),
            _ => unknown(),
        },
        ["_search"] => match m {
            "POST" => {
                req.via_post = true;
                Ok(set(req, Interaction::SearchSystem))
            }
            _ => unknown(),
        },
        [op] if op.starts_with('$') => {
            let name = op_name(op).ok_or("malformed operation name")?;
            if m != "GET" && m != "POST" {
                return unknown();
            }
            req.operation = Some((name, Level::System));
            Ok(set(req, Interaction::Operation))
        }
        [t] => {
            req.resource_type = Some(typ(t).ok_or("not a resource type")?);
            match m {
                "GET" => Ok(set(req, Interaction::SearchType)),
                "POST" => Ok(set(req, Interaction::Create)),
                "PUT" | "PATCH" | "DELETE" if has_query => {
                    req.conditional = true;
                    let i = match m {
                        "PUT" => Interaction::Update,
                        "PATCH" => Interaction::Patch,
                        _ => Interaction::Delete,
                    };
                    Ok(set(req, i))
                }
                _ => unknown(),
            }
        }
        [t, "_search"] => {
            req.resource_type = Some(typ(t).ok_or("not a resource type")?);
            match m {
                "POST" => {
                    req.via_post = true;
                    Ok(set(req, Interaction::SearchType))
                }
                _ => unknown(),
            }
        }
        [t, "_history"] => {
            req.resource_type = Some(typ(t).ok_or("not a resource type")?);
            match m {
                "GET" => Ok(set(req, Interaction::HistoryType)),
                _ => unknown(),
            }
        }
        [t, op] if op.starts_with('$') => {
            req.resource_type = Some(typ(t).ok_or("not a resource type")?);
            let name = op_name(op).ok_or("malformed operation name")?;
            if m != "GET" && m != "POST" {
                return unknown();
            }
            req.operation = Some((name, Level::Type));
            Ok(set(req, Interaction::Operation))
        }
        [t, i] => {
            req.resource_type = Some(typ(t).ok_or("not a resource type")?);
            req.id = Some(id(i).ok_or("not a FHIR id")?);
            match m {
                "GET" => Ok(set(req, Interaction::Read)),
                "PUT" => Ok(set(req, Interaction::Update)),
                "PATCH" => Ok(set(req, Interaction::Patch)),
                "DELETE" => Ok(set(req, Interaction::Delete)),
                _ => unknown(),
            }
        }
        [t, i, "_history"] => {
            req.resource_type = Some(typ(t).ok_or("not a resource type")?);
            req.id = Some(id(i).ok_or("not a FHIR id")?);
            match m {
                "GET" => Ok(set(req, Interaction::HistoryInstance)),
                _ => unknown(),
            }
        }
        [t, i, "_history", v] => {
            req.resource_type = Some(typ(t).ok_or("not a resource type")?);
            req.id = Some(id(i).ok_or("not a FHIR id")?);
            req.version = Some(id(v).ok_or("not a FHIR version id")?);
            match m {
                "GET" => Ok(set(req, Interaction::Vread)),
                _ => unknown(),
            }
        }
        [t, i, op] if op.starts_with('$') => {
            req.resource_type = Some(typ(t).ok_or("not a resource type")?);
            req.id = Some(id(i).ok_or("not a FHIR id")?);
            let name = op_name(op).ok_or("malformed operation name")?;
            if m != "GET" && m != "POST" {
                return unknown();
            }
            req.operation = Some((name, Level::Instance));
            Ok(set(req, Interaction::Operation))
        }
        [owner, i, target] | [owner, i, target, "_search"] => {
            if *owner != "Patient" {
                return Err("only the Patient compartment is supported".into());
            }
            let post = segs.len() == 4;
            req.compartment_id = Some(id(i).ok_or("not a FHIR id")?);
            req.resource_type = if *target == "*" {
                None
            } else {
                Some(typ(target).ok_or("not a resource type")?)
            };
            match (m, post) {
                ("GET", false) => Ok(set(req, Interaction::SearchCompartment)),
                ("POST", true) => {
                    req.via_post = true;
                    Ok(set(req, Interaction::SearchCompartment))
                }
                _ => unknown(),
            }
        }
        _ => Err("not a FHIR REST path".into()),
    }
}
