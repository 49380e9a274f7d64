//! The `authz` object of a route rule as written in the policy (docs/checks.md §4), and the
//! route's `mode`. Unknown fields are refused; [`super::rule::Authz::compile`] checks the rest.

use serde::Deserialize;
use serde_json::Value;

/// Enforce (deny) or shadow (decide, count `shadow_denied.<reason>`, log, let it pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    /// Dry run: every decision is made and counted, the request passes.
    Shadow,
}

// ---------- the document ----------

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzDoc {
    #[serde(default)]
    pub scopes: Option<ScopesDoc>,
    #[serde(default)]
    pub claims: Vec<CondDoc>,
    #[serde(default)]
    pub authorization_details: Vec<DetailDoc>,
    #[serde(default)]
    pub bind: Vec<BindDoc>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopesDoc {
    /// Every one of these scopes must be granted.
    #[serde(default)]
    pub all_of: Vec<String>,
    /// At least one of these scopes must be granted.
    #[serde(default)]
    pub any_of: Vec<String>,
}

/// One condition on a claim (`claim`) or on a field of an `authorization_details` entry
/// (`field`, dotted path). Exactly one test, except `gte` + `lte` together (a range).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CondDoc {
    #[serde(default)]
    pub claim: Option<String>,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub equals: Option<Value>,
    #[serde(default)]
    pub one_of: Option<Vec<Value>>,
    #[serde(default)]
    pub prefix: Option<String>,
    /// `true`: present (not null); `false`: absent.
    #[serde(default)]
    pub present: Option<bool>,
    #[serde(default)]
    pub gte: Option<f64>,
    #[serde(default)]
    pub lte: Option<f64>,
    /// The claim is a list (or a single value) that contains this value.
    #[serde(default)]
    pub contains: Option<Value>,
}

/// RFC 9396 §2: some entry of `authorization_details` with this `type` satisfies every field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailDoc {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub fields: Vec<CondDoc>,
}

/// A request value (path template parameter or header) that must equal a token value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindDoc {
    #[serde(default)]
    pub path_param: Option<String>,
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub claim: Option<String>,
    #[serde(default)]
    pub authorization_details: Option<DetailRefDoc>,
    /// `equals` (default) or `colon_suffix`: the token value ends with `:` + the request
    /// value (HelseID's `NO:ORGNR:<parent>:<child>` organisation identifiers).
    #[serde(default, rename = "match")]
    pub match_: BindMatch,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailRefDoc {
    #[serde(rename = "type")]
    pub type_: String,
    pub field: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindMatch {
    #[default]
    Equals,
    ColonSuffix,
}
