//! `fapi-guard`: the API owner's tool. Built from the same core crate as the filters.
//!
//!   fapi-guard check POLICY [--target envoy|istio] [--behind-gateway]
//!   fapi-guard explain --policy P --request 'GET /r4/Observation/123' [--header 'Name: value']...
//!                      [--jwks J] [--now T] [--response FILE] [--response-status N]
//!                      [--body FILE] [--authority HOST] [--scheme http|https]
//!                      [--filters token,dpop,fhir_scope] [--json] [--show-personal]
//!   fapi-guard reason-codes [--markdown | --json]
//!
//! Nothing leaves the machine: no network, no files written.

use std::process::ExitCode;

mod gateway;

use fapi_guard_core::describe::{self, Target};
use fapi_guard_core::explain::{self, Options, Outcome, Request, Trace, MAX_INPUT_BYTES};
use fapi_guard_core::policy::{Policy, PolicyDoc};
use fapi_guard_core::reason_doc;

/// Writes to stdout, ignoring a closed pipe (`fapi-guard check P | head`).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
macro_rules! say_raw {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

const USAGE: &str = "usage:
  fapi-guard check POLICY [--target envoy|istio] [--behind-gateway]
  fapi-guard explain --policy P --request 'METHOD /path?query' [--header 'Name: value']...
                     [--jwks J] [--now UNIX_SECONDS] [--response FILE] [--response-status N]
                     [--body FILE] [--authority HOST[:PORT]] [--scheme http|https]
                     [--filters token,dpop,fhir_scope] [--json] [--show-personal]
  fapi-guard reason-codes [--markdown | --json]

explain redacts personal identifiers in the decoded token (national identity number, names,
HPR number); --show-personal prints them. check --behind-gateway: a gateway serves the API's
routes and forwards them to the proxy running the filters (what DPoP `htu` checks then need).";

const POLICY_SCHEMA: &str = include_str!("../../../policies/schema/policy.schema.json");
const DPOP_SCHEMA: &str = include_str!("../../../policies/schema/dpop.schema.json");
const FHIR_SCHEMA: &str = include_str!("../../../policies/schema/fhir.schema.json");

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    let result = match args.first().map(String::as_str) {
        Some("check") => check(rest),
        Some("explain") => explain_cmd(rest),
        Some("reason-codes") => reason_codes(rest),
        Some("-h") | Some("--help") | Some("help") => {
            say!("{USAGE}");
            Ok(0)
        }
        _ => Err(format!("unknown command\n{USAGE}")),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(msg) => {
            eprintln!("fapi-guard: {msg}");
            ExitCode::from(2)
        }
    }
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
    if meta.len() > MAX_INPUT_BYTES as u64 {
        return Err(format!(
            "{path}: larger than {MAX_INPUT_BYTES} bytes, refused unread"
        ));
    }
    std::fs::read(path).map_err(|e| format!("{path}: {e}"))
}

/// The policy's JSON Schema (with the dpop and fhir sections it references).
fn schema_errors(doc: &serde_json::Value) -> Result<Vec<String>, String> {
    let parse =
        |s: &str| serde_json::from_str::<serde_json::Value>(s).map_err(|e| format!("schema: {e}"));
    let root = parse(POLICY_SCHEMA)?;
    let dpop = jsonschema::Resource::from_contents(parse(DPOP_SCHEMA)?);
    let fhir = jsonschema::Resource::from_contents(parse(FHIR_SCHEMA)?);
    let validator = jsonschema::options()
        .with_resource("https://fapi-guard.example/dpop.schema.json", dpop)
        .with_resource("https://fapi-guard.example/fhir.schema.json", fhir)
        .build(&root)
        .map_err(|e| format!("schema: {e}"))?;
    Ok(validator
        .iter_errors(doc)
        .map(|e| {
            let at = e.instance_path().to_string();
            format!("{}: {e}", if at.is_empty() { "/".to_string() } else { at })
        })
        .collect())
}

fn check(args: &[String]) -> Result<u8, String> {
    let mut path = None;
    let mut target = Target::Envoy;
    let mut behind_gateway = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--behind-gateway" => behind_gateway = true,
            "--target" => {
                let t = it.next().ok_or("--target needs envoy or istio")?;
                target =
                    Target::parse(t).ok_or_else(|| format!("--target {t}: use envoy or istio"))?;
            }
            p if !p.starts_with("--") && path.is_none() => path = Some(p.to_string()),
            other => return Err(format!("check: unexpected argument {other}\n{USAGE}")),
        }
    }
    let path = path.ok_or_else(|| format!("check: no POLICY\n{USAGE}"))?;
    let bytes = read(&path)?;
    // 1. Exactly the filters' loader (filters/host config::load_policy → Policy::from_json).
    let policy = match Policy::from_json(&bytes) {
        Ok(p) => p,
        Err(e) => {
            say!("{path}: refused by the filters' loader (Envoy would refuse the configuration):");
            say!("  {e}");
            return Ok(1);
        }
    };
    say!(
        "{path}: loads in the filters (policy for api `{}`)",
        policy.api_name
    );
    // 2. The JSON Schema (policies/schema/policy.schema.json).
    let doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{path}: {e}"))?;
    let errors = schema_errors(&doc)?;
    let mut failed = false;
    if errors.is_empty() {
        say!("{path}: valid against policies/schema/policy.schema.json");
    } else {
        failed = true;
        say!("{path}: does not match policies/schema/policy.schema.json:");
        for e in &errors {
            say!("  {e}");
        }
    }
    // 3. Lints for the target.
    let mut lints = describe::lint(&policy, target);
    if behind_gateway {
        lints.extend(gateway::lint(&policy));
    }
    let name = match target {
        Target::Envoy => "envoy",
        Target::Istio => "istio",
    };
    if lints.is_empty() {
        say!("{path}: no findings for --target {name}");
    }
    for l in &lints {
        if l.level == "error" {
            failed = true;
        }
        say!(
            "{}: {} ({name}) `{}`: {}",
            path,
            l.level,
            l.field,
            l.message
        );
    }
    // 4. In words.
    let pdoc: Option<PolicyDoc> = serde_json::from_slice(&bytes).ok();
    say!("\nWhat this policy means:");
    for line in describe::describe(&policy, pdoc.as_ref()) {
        say!("  - {line}");
    }
    Ok(if failed { 1 } else { 0 })
}

fn explain_cmd(args: &[String]) -> Result<u8, String> {
    let mut policy_path = None;
    let mut request = None;
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut jwks_path = None;
    let mut now = None;
    let mut response_path = None;
    let mut response_status = 200u32;
    let mut body_path = None;
    let mut authority = "localhost".to_string();
    let mut scheme = "http".to_string();
    let mut filters: Vec<String> = Vec::new();
    let mut json = false;
    let mut show_personal = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--policy" => policy_path = Some(val()?),
            "--request" => request = Some(val()?),
            "--header" | "-H" => {
                let h = val()?;
                let (k, v) = h.split_once(':').ok_or_else(|| {
                    format!(
                        "--header `{}`: use 'Name: value'",
                        h.chars().take(40).collect::<String>()
                    )
                })?;
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            "--jwks" => jwks_path = Some(val()?),
            "--now" => {
                let v = val()?;
                now = Some(
                    v.parse::<i64>()
                        .map_err(|_| format!("--now {v}: seconds since the epoch"))?,
                );
            }
            "--response" => response_path = Some(val()?),
            "--response-status" => {
                let v = val()?;
                response_status = v
                    .parse()
                    .map_err(|_| format!("--response-status {v}: a number"))?;
            }
            "--body" => body_path = Some(val()?),
            "--authority" => authority = val()?,
            "--scheme" => scheme = val()?,
            "--filters" => {
                filters = val()?
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                for f in &filters {
                    if !["token", "dpop", "fhir_scope"].contains(&f.as_str()) {
                        return Err(format!(
                            "--filters: unknown filter `{f}` (token, dpop, fhir_scope)"
                        ));
                    }
                }
            }
            "--json" => json = true,
            "--show-personal" => show_personal = true,
            other => return Err(format!("explain: unexpected argument {other}\n{USAGE}")),
        }
    }
    let policy_path =
        policy_path.ok_or_else(|| format!("explain: --policy is required\n{USAGE}"))?;
    let request = request.ok_or_else(|| format!("explain: --request is required\n{USAGE}"))?;
    let (method, path) = request
        .trim()
        .split_once(' ')
        .ok_or("--request: use 'METHOD /path?query'")?;
    let path = path.trim();
    if !path.starts_with('/') {
        return Err(format!(
            "--request: the path must start with `/` (got `{path}`)"
        ));
    }
    let policy_bytes = read(&policy_path)?;
    // A filter the policy cannot run is refused up front, naming the field (envoy/render.py
    // `checked_steps` refuses the same): without `fhir` the FHIR scope filter fails closed.
    if filters.iter().any(|f| f == "fhir_scope") {
        let has_fhir = serde_json::from_slice::<serde_json::Value>(&policy_bytes)
            .ok()
            .is_some_and(|v| v.get("fhir").is_some_and(|f| f.is_object()));
        if !has_fhir {
            return Err(format!(
                "--filters: fhir_scope needs the policy field `fhir` ({policy_path} has none: a plain REST API runs token,dpop); leave --filters out to run what the policy configures"
            ));
        }
    }
    let jwks = jwks_path.as_deref().map(read).transpose()?;
    let response = response_path.as_deref().map(read).transpose()?;
    let body = body_path.as_deref().map(read).transpose()?;
    let now = now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    });
    let req = Request {
        method,
        path,
        scheme: &scheme,
        authority: &authority,
        headers: &headers,
        body: body.as_deref(),
    };
    let opts = Options {
        filters,
        jwks: jwks.as_deref(),
        now,
        response: response.as_deref().map(|b| (response_status, b)),
        show_personal,
    };
    let trace = match explain::explain_json(&policy_bytes, &req, &opts) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{policy_path}: refused by the filters' loader: {e}");
            return Ok(1);
        }
    };
    if json {
        say!(
            "{}",
            serde_json::to_string_pretty(&trace).map_err(|e| e.to_string())?
        );
    } else {
        say_raw!("{}", render_text(&trace, method, path));
    }
    Ok(0)
}

/// The trace for a terminal.
pub fn render_text(t: &Trace, method: &str, path: &str) -> String {
    let mut s = format!(
        "{method} {path}\napi `{}`, filters {}, route {}\n\nChecks, in the filters' order:\n",
        t.api,
        t.filters.join(" → "),
        t.route
    );
    for st in &t.steps {
        let mark = match st.outcome {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
            Outcome::Pending => "wait",
        };
        s.push_str(&format!(
            "  [{mark}] {:<10} {}  ({})",
            st.filter, st.check, st.spec
        ));
        if let Some(r) = st.reason {
            s.push_str(&format!("  reason={r}"));
        }
        s.push('\n');
        if let Some(d) = &st.detail {
            s.push_str(&format!("         {d}\n"));
        }
    }
    for d in &t.decoded {
        s.push_str(&format!(
            "\n{} ({}):\n  header  {}\n  payload {}\n",
            d.what, d.note, d.header, d.payload
        ));
    }
    s.push_str("\nAnswer:\n");
    let a = &t.answer;
    match (a.forwarded, a.status) {
        (true, Some(st)) => s.push_str(&format!(
            "  forwarded to the API; the client gets its {st}\n"
        )),
        (true, None) => s.push_str("  forwarded to the API\n"),
        (false, Some(st)) => s.push_str(&format!(
            "  HTTP {st} from the {} filter, reason {}\n",
            a.filter.unwrap_or("?"),
            a.reason.unwrap_or("-")
        )),
        (false, None) => s.push_str("  not answered yet\n"),
    }
    for (k, v) in &a.headers {
        s.push_str(&format!("  {k}: {v}\n"));
    }
    if let Some(b) = &a.body {
        s.push_str(&format!("  {b}\n"));
    }
    s.push_str(&format!("  why: {}\n", a.why));
    for n in &t.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    s
}

fn reason_codes(args: &[String]) -> Result<u8, String> {
    match args.first().map(String::as_str) {
        None | Some("--markdown") => say_raw!("{}", reason_doc::markdown()),
        Some("--json") => {
            let rows: Vec<serde_json::Value> = fapi_guard_core::denial::Reason::ALL
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "code": r.code(), "status": r.status(),
                        "meaning": r.meaning().trim(), "fix": reason_doc::fix(*r),
                    })
                })
                .collect();
            say!("{}", serde_json::Value::Array(rows));
        }
        Some(o) => return Err(format!("reason-codes: unexpected argument {o}")),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_with_its_referenced_sections_is_applied() {
        let ok = serde_json::json!({"api": {"name": "a", "audience": "b"},
            "issuers": [{"issuer": "i", "jwks": {"keys": []}}]});
        assert_eq!(schema_errors(&ok).map(|e| e.len()), Ok(0));
        // `dpop` and `fhir` are `$ref`s to the other schema files.
        let bad = serde_json::json!({"api": {"name": "a", "audience": "b"},
            "issuers": [{"issuer": "i", "jwks": {"keys": []}, "jwks_cluster": "c"}],
            "dpop": {"no_such_field": 1}, "fhir": {"base_path": 7}});
        let errors = schema_errors(&bad).unwrap_or_default();
        for at in ["/issuers/0", "/dpop", "/fhir/base_path"] {
            assert!(errors.iter().any(|e| e.starts_with(at)), "{at}: {errors:?}");
        }
    }
}
