//! The patients that request and response bodies name, for the audit record (docs/audit.md
//! "Patients"). Where the FHIR scope step buffers a body to decide, the record reads what it
//! decided on; elsewhere the body is observed, never held: each part is copied as it goes by
//! (up to the `fhir` section's byte limit) and read at the end of the stream. Only JSON
//! (FHIR R4 http.html "Content Types": `application/fhir+json`, `application/json`); a body
//! it cannot read is recorded as such (`patients_complete: false`), never guessed.

use serde_json::Value;

use super::audit::Trail;
use crate::fhir::compartment::Compartment;

/// The direction of a body (the prefix of its `patients_unread` code).
#[derive(Clone, Copy)]
pub(super) enum Dir {
    Request,
    Response,
}

/// Why a body's patients are not known (the index in [`CODES`]).
#[derive(Clone, Copy)]
enum Why {
    NotJson,
    Encoded,
    OverLimit,
    Unparsed,
    /// The stream ended before the body did (a reset).
    Cut,
}

/// `patients_unread` codes: the request's, then the response's, in [`Why`] order.
const CODES: [[&str; 5]; 2] = [
    [
        "request_not_json",
        "request_encoded",
        "request_over_limit",
        "request_unparsed",
        "request_cut",
    ],
    [
        "response_not_json",
        "response_encoded",
        "response_over_limit",
        "response_unparsed",
        "response_cut",
    ],
];

fn code(dir: Dir, why: Why) -> &'static str {
    CODES
        .get(dir as usize)
        .and_then(|c| c.get(why as usize))
        .copied()
        .unwrap_or_default()
}

/// One direction's body as the record reads it.
#[derive(Default)]
pub(super) enum Reading {
    /// Not read (none expected, or read already).
    #[default]
    Off,
    /// JSON: copied as it goes by.
    On(Dir, Vec<u8>),
    /// A `_search` form body (`application/x-www-form-urlencoded`): its parameters are the
    /// search's as much as the query's (FHIR R4 http.html#search), read with them for the record.
    Form(Vec<u8>),
    /// A body the record cannot read: this code, if any byte of it comes.
    Unreadable(&'static str),
}

/// The request and response bodies of one stream.
#[derive(Default)]
pub(super) struct Watch {
    pub req: Reading,
    pub resp: Reading,
}

/// The patients a parsed body names go on the record.
pub(super) fn named(trail: &mut Trail, v: &Value) {
    if !Compartment::default().patients_named(v, &mut trail.patients) {
        trail.unread("unresolved_reference");
    }
}

/// A body with these headers follows.
pub(super) fn start(dir: Dir, content_type: Option<&str>, encoding: Option<&str>) -> Reading {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let json = matches!(media.as_str(), "application/fhir+json" | "application/json");
    // RFC 9110 §8.4: any coding but `identity` is bytes the record cannot read.
    if encoding.is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity")) {
        Reading::Unreadable(code(dir, Why::Encoded))
    } else if matches!(dir, Dir::Request) && media == "application/x-www-form-urlencoded" {
        Reading::Form(Vec::new())
    } else if json {
        Reading::On(dir, Vec::new())
    } else {
        Reading::Unreadable(code(dir, Why::NotJson))
    }
}

impl Reading {
    /// The record waits for the body's end (or its first byte, for one it cannot read).
    pub fn active(&self) -> bool {
        !matches!(self, Reading::Off)
    }

    /// A part of `size` bytes went by (`read(n)`: its first `n` bytes); `held`: the host
    /// buffers the body so far, and `size` is all of it.
    #[inline(never)]
    pub fn part(
        &mut self,
        trail: &mut Trail,
        limit: usize,
        size: usize,
        held: bool,
        read: &dyn Fn(usize) -> Vec<u8>,
    ) {
        let dir = match self {
            Reading::On(dir, _) => *dir,
            _ => Dir::Request,
        };
        match self {
            Reading::On(_, buf) | Reading::Form(buf) => {
                if held {
                    buf.clear();
                }
                let room = limit.saturating_add(1).saturating_sub(buf.len());
                buf.extend(read(size.min(room)));
                if buf.len() > limit {
                    trail.unread(code(dir, Why::OverLimit));
                    *self = Reading::Off;
                }
            }
            Reading::Unreadable(why) if size > 0 => {
                trail.unread(why);
                *self = Reading::Off;
            }
            _ => {}
        }
    }

    /// The body ended: its patients go on the record.
    #[inline(never)]
    pub fn end(&mut self, trail: &mut Trail) {
        match self {
            Reading::On(dir, buf) => {
                let buf = std::mem::take(buf);
                let dir = *dir;
                self.whole(trail, &buf, dir);
            }
            Reading::Form(buf) => {
                let buf = std::mem::take(buf);
                self.whole(trail, &buf, Dir::Request);
            }
            // No byte of it came.
            _ => *self = Reading::Off,
        }
    }

    /// The whole body (buffered by the FHIR scope step, or copied here).
    pub fn whole(&mut self, trail: &mut Trail, body: &[u8], dir: Dir) {
        match std::mem::take(self) {
            _ if body.is_empty() => {}
            Reading::On(..) => match serde_json::from_slice::<Value>(body) {
                Ok(v) => named(trail, &v),
                Err(_) => trail.unread(code(dir, Why::Unparsed)),
            },
            Reading::Form(_) => match String::from_utf8(body.to_vec()) {
                // Read with the query when the record is written (`audit::record`).
                Ok(form) => trail.search_form = Some(form),
                Err(_) => trail.unread(code(dir, Why::Unparsed)),
            },
            Reading::Unreadable(why) => trail.unread(why),
            Reading::Off => {}
        }
    }

    /// The record is written: a body still going by was not read whole (unless the stream
    /// was refused: then it reached no one).
    #[inline(never)]
    pub fn close(&mut self, trail: &mut Trail, refused: bool) {
        let why = match std::mem::take(self) {
            Reading::On(dir, _) => code(dir, Why::Cut),
            Reading::Form(_) => code(Dir::Request, Why::Cut),
            Reading::Unreadable(why) => why,
            Reading::Off => return,
        };
        if !refused {
            trail.unread(why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dir: Dir, ct: &str, ce: Option<&str>, parts: &[&[u8]], limit: usize) -> Trail {
        let mut t = Trail::default();
        let mut r = start(dir, Some(ct), ce);
        for p in parts {
            r.part(&mut t, limit, p.len(), false, &|n| {
                p.get(..n).unwrap_or_default().to_vec()
            });
        }
        r.end(&mut t);
        t
    }

    #[test]
    fn searchset_parts_name_every_patient() {
        let body = br#"{"resourceType":"Bundle","type":"searchset","entry":[
            {"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p-1"}}},
            {"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p-2/_history/4"},
              "performer":[{"reference":"Practitioner/x"}]}},
            {"resource":{"resourceType":"Patient","id":"p-3"},"search":{"mode":"include"}},
            {"resource":{"resourceType":"Medication","id":"m"}}]}"#;
        let (a, b) = body.split_at(40);
        let t = read(
            Dir::Response,
            "application/fhir+json; charset=utf-8",
            None,
            &[a, b],
            4096,
        );
        assert_eq!(t.patients, ["p-1", "p-2", "p-3"]);
        assert_eq!(t.unread, None);
    }

    #[test]
    fn what_it_cannot_read_is_said() {
        let obs = br#"{"resourceType":"Observation","subject":{"reference":"Patient/p-1"}}"#;
        let cases: [(&str, Option<&str>, usize, Option<&str>); 6] = [
            ("application/json", None, 4096, None),
            ("application/fhir+xml", None, 4096, Some("request_not_json")),
            (
                "application/fhir+json",
                Some("gzip"),
                4096,
                Some("request_encoded"),
            ),
            ("application/fhir+json", Some("identity"), 4096, None),
            (
                "application/fhir+json",
                None,
                10,
                Some("request_over_limit"),
            ),
            ("text/plain", None, 4096, Some("request_not_json")),
        ];
        for (ct, ce, limit, want) in cases {
            let t = read(Dir::Request, ct, ce, &[obs], limit);
            assert_eq!(t.unread, want, "{ct} {ce:?}");
            assert_eq!(t.patients.is_empty(), want.is_some(), "{ct}");
        }
        let t = read(
            Dir::Response,
            "application/json",
            None,
            &[b"{\"resourceType\":"],
            99,
        );
        assert_eq!(t.unread, Some("response_unparsed"));
        // An empty body names no one, whatever its type.
        let t = read(Dir::Response, "application/fhir+xml", None, &[b""], 99);
        assert_eq!(t.unread, None);
        // A conditional reference names a patient it cannot resolve.
        let cond =
            br#"{"resourceType":"Observation","subject":{"reference":"Patient?identifier=x|1"}}"#;
        let t = read(Dir::Request, "application/fhir+json", None, &[cond], 4096);
        assert_eq!(t.unread, Some("unresolved_reference"));
    }

    #[test]
    fn a_body_cut_short_is_said_unless_refused() {
        let mut t = Trail::default();
        let mut r = start(Dir::Response, Some("application/json"), None);
        r.part(&mut t, 99, 3, false, &|_| b"{\"a".to_vec());
        assert!(r.active());
        r.close(&mut t, false);
        assert_eq!(t.unread, Some("response_cut"));
        let mut t = Trail::default();
        let mut r = start(Dir::Request, Some("application/json"), None);
        r.close(&mut t, true);
        assert_eq!(t.unread, None);
    }

    #[test]
    fn a_request_form_body_is_kept_for_the_record_a_response_one_is_not_read() {
        let ct = "Application/x-www-form-urlencoded; charset=utf-8";
        let t = read(Dir::Request, ct, None, &[b"patient=", b"p-3"], 100);
        assert_eq!(t.search_form.as_deref(), Some("patient=p-3"));
        assert_eq!(t.unread, None);
        let t = read(Dir::Request, ct, None, &[b"patient=p-3"], 4);
        assert_eq!(
            (t.search_form, t.unread),
            (None, Some("request_over_limit"))
        );
        let t = read(Dir::Response, ct, None, &[b"patient=p-3"], 100);
        assert_eq!((t.search_form, t.unread), (None, Some("response_not_json")));
    }
}
