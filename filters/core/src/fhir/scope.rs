//! SMART App Launch v2.2 "Scopes and launch context": the scope grammar (docs/checks.md §3).
//!
//! `(patient|user|system)/(ResourceType|*).<permissions>[?param=value(&param=value)*]`
//! where `<permissions>` is a non-empty subset of `cruds` in that order (v2), or one of the
//! v1 forms `read` (= `rs`), `write` (= `cud`), `*` (= `cruds`).
//!
//! A scope that does not start with a SMART context (`openid`, `fhirUser`, `launch/patient`,
//! `offline_access`, issuer-specific ones) is [`ParsedScope::NotSmart`] and ignored. A scope
//! that starts like one but breaks the grammar is [`ParsedScope::Malformed`] and grants nothing.

use crate::claims::VerifiedToken;

use super::query::{self, Param};

/// The launch context a scope is granted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Context {
    Patient,
    User,
    System,
}

impl Context {
    pub fn name(self) -> &'static str {
        match self {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Context> {
        match s {
            "patient" => Some(Context::Patient),
            "user" => Some(Context::User),
            "system" => Some(Context::System),
            _ => None,
        }
    }

    pub const ALL: [Context; 3] = [Context::Patient, Context::User, Context::System];
}

/// A set of SMART v2 permission letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Perms(u8);

/// The five letters, in the order SMART v2 requires.
const LETTERS: [char; 5] = ['c', 'r', 'u', 'd', 's'];

impl Perms {
    pub const C: Perms = Perms(1);
    pub const R: Perms = Perms(2);
    pub const U: Perms = Perms(4);
    pub const D: Perms = Perms(8);
    pub const S: Perms = Perms(16);
    pub const NONE: Perms = Perms(0);
    pub const ALL: Perms = Perms(31);

    pub fn union(self, other: Perms) -> Perms {
        Perms(self.0 | other.0)
    }

    pub fn contains(self, other: Perms) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// v2 letters `cruds` in order, non-empty, no repeats (`.sr`, `.dus`, `.rr` are invalid).
    pub fn parse_v2(s: &str) -> Option<Perms> {
        if s.is_empty() {
            return None;
        }
        let mut next = 0usize;
        let mut bits = 0u8;
        for ch in s.chars() {
            let pos = LETTERS.iter().skip(next).position(|l| *l == ch)? + next;
            bits |= 1 << pos;
            next = pos + 1;
        }
        Some(Perms(bits))
    }

    /// v2 letters, or the v1 forms `read`, `write`, `*`.
    pub fn parse(s: &str) -> Option<Perms> {
        match s {
            // SMART v2.2 §"Scopes for requesting clinical data": v1 equivalents.
            "read" => Some(Perms::R.union(Perms::S)),
            "write" => Some(Perms::C.union(Perms::U).union(Perms::D)),
            "*" => Some(Perms::ALL),
            _ => Perms::parse_v2(s),
        }
    }

    /// Letters in canonical order, e.g. `rs`.
    pub fn letters(self) -> String {
        LETTERS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, l)| *l)
            .collect()
    }
}

/// One SMART grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmartScope {
    pub context: Context,
    /// `None` for `*` (every type, also ones added later).
    pub resource_type: Option<String>,
    pub perms: Perms,
    /// `?param=value&...` constraint, decoded; empty when the scope has none.
    pub constraint: Vec<Param>,
}

impl SmartScope {
    pub fn covers_type(&self, t: &str) -> bool {
        self.resource_type.as_deref().is_none_or(|rt| rt == t)
    }

    pub fn is_wildcard(&self) -> bool {
        self.resource_type.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedScope {
    Smart(SmartScope),
    /// Not a SMART resource scope: ignored for FHIR access, never an error.
    NotSmart,
    /// Starts with a SMART context but breaks the grammar: grants nothing.
    Malformed,
}

/// FHIR resource type name: `[A-Z][A-Za-z]*` (FHIR R4 §2.1.27.1 names).
pub fn is_resource_type(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_alphabetic())
        && s.len() <= 64
}

pub fn parse_scope(s: &str) -> ParsedScope {
    let Some((ctx, rest)) = s.split_once('/') else {
        return ParsedScope::NotSmart;
    };
    let Some(context) = Context::parse(ctx) else {
        return ParsedScope::NotSmart;
    };
    let (body, constraint) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let Some((rt, perms)) = body.split_once('.') else {
        return ParsedScope::Malformed;
    };
    let resource_type = if rt == "*" {
        None
    } else if is_resource_type(rt) {
        Some(rt.to_string())
    } else {
        return ParsedScope::Malformed;
    };
    let Some(perms) = Perms::parse(perms) else {
        return ParsedScope::Malformed;
    };
    let constraint = match constraint {
        None => Vec::new(),
        Some(q) => match query::parse_strict(q) {
            Some(params) if !params.is_empty() => params,
            _ => return ParsedScope::Malformed,
        },
    };
    ParsedScope::Smart(SmartScope {
        context,
        resource_type,
        perms,
        constraint,
    })
}

/// The token's scope strings: `VerifiedToken::scopes`, else the `scope`/`scp` claim as a
/// string or an array of strings ([`crate::claims::scope_values`]). Entries holding spaces
/// are split.
pub fn token_scope_strings(token: &VerifiedToken) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if !token.scopes.is_empty() {
        for s in &token.scopes {
            out.extend(s.split_whitespace().map(str::to_string));
        }
        return out;
    }
    out.extend(crate::claims::scope_values(&token.claims).unwrap_or_default());
    out
}

/// Every well-formed SMART grant of the token in one of `contexts`.
pub fn grants(token: &VerifiedToken, contexts: &[Context]) -> Vec<SmartScope> {
    token_scope_strings(token)
        .iter()
        .filter_map(|s| match parse_scope(s) {
            ParsedScope::Smart(g) if contexts.contains(&g.context) => Some(g),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_letters_must_be_in_order() {
        let cases = [
            ("rs", Some("rs")),
            ("cruds", Some("cruds")),
            ("c", Some("c")),
            ("cud", Some("cud")),
            ("sr", None),
            ("dus", None),
            ("rr", None),
            ("", None),
            ("x", None),
            ("rsx", None),
            ("read", Some("rs")),
            ("write", Some("cud")),
            ("*", Some("cruds")),
            ("READ", None),
        ];
        for (input, want) in cases {
            let got = Perms::parse(input).map(|p| p.letters());
            assert_eq!(got.as_deref(), want, "perms `{input}`");
        }
    }
}
