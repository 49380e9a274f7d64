//! Holding a stream until its decision is made, and what a read decided on the response may
//! ask of the upstream (`docs/checks.md`, "Never released undecided" and "Conditional reads").
//!
//! A stream ends in one of two ways: DATA (or HEADERS) carrying END_STREAM, or a trailer
//! section (HTTP/2 HEADERS after the DATA, RFC 9113 §8.1; the trailer section of an HTTP/1.1
//! chunked body, RFC 9112 §7.1.2). Either way the body is complete, so a decision that waits
//! for the body is made at either, and the part that ended the stream is held until the
//! decision allows it (releasing trailers releases everything held before them).

/// One part of a request or response, as the host delivers it to the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Headers {
        end_of_stream: bool,
    },
    Data {
        end_of_stream: bool,
    },
    /// A trailer section: always the end of the stream.
    Trailers,
}

/// Where one direction's decision stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gate {
    /// Nothing is pending on this direction (no decision needs it, or it was allowed).
    #[default]
    Open,
    /// The decision waits for the whole body: parts are held; the end of the stream decides.
    Buffering,
    /// The decision waits for something else (the stored read before a write): all held.
    Waiting,
    /// Refused: a local reply was sent; nothing of the stream goes on.
    Closed,
}

/// What the filter does with a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Let it go on (with whatever was held before it).
    Release,
    /// Hold it (the host buffers it) and wait.
    Hold,
    /// The stream ended with this part: decide now on what was buffered. The part stays
    /// held unless the decision allows.
    Decide,
}

/// The one rule every body and trailers callback follows: nothing goes on while a decision
/// is pending or after a refusal, and the end of the stream (whichever part carries it)
/// triggers the decision.
pub fn step(gate: Gate, part: Part) -> Step {
    let ends = match part {
        Part::Headers { end_of_stream } | Part::Data { end_of_stream } => end_of_stream,
        Part::Trailers => true,
    };
    match gate {
        Gate::Open => Step::Release,
        Gate::Waiting | Gate::Closed => Step::Hold,
        Gate::Buffering if ends => Step::Decide,
        Gate::Buffering => Step::Hold,
    }
}

/// Request headers that make the upstream answer about a resource without sending it
/// (RFC 9110 §13.1): `If-None-Match`/`If-Modified-Since` give 304, `If-Match`/
/// `If-Unmodified-Since` give 412, `Range` (with or without `If-Range`) gives a 206 part.
/// On a read decided on the response such an answer cannot be checked, yet it tells whether
/// a resource exists and its version. They are removed from those reads (only), so the API
/// sends the whole representation, which is then checked; a client that asked for a 304
/// gets a 200 with the full body, which is a valid answer to its GET (RFC 9110 §13.2.1:
/// preconditions are optional for a recipient; §14.2: a server may ignore `Range`).
pub const CONDITIONAL_READ_HEADERS: [&str; 6] = [
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
    "range",
];

/// A status that answers a read without the representation (304 Not Modified, 412
/// Precondition Failed, 206 Partial Content): a response check cannot pass it, whatever
/// the body (fail closed; the conditional headers were removed, so a conforming API does not
/// send these).
pub fn unverifiable_status(status: u32) -> bool {
    matches!(status, 206 | 304 | 412)
}

/// A batch/transaction response entry without a `resource`, for a read the response check
/// must see: passes only with an error status (4xx/5xx other than 412), which carries no
/// resource. A 2xx/3xx (e.g. `304 Not Modified` for an entry's `ifNoneMatch`, FHIR R4
/// §3.1.0.11.1) or a missing/unparsable status fails closed.
pub fn entry_without_resource_passes(entry_status: Option<&str>) -> bool {
    let code = entry_status
        .and_then(|s| s.trim().get(..3))
        .and_then(|c| c.parse::<u32>().ok());
    matches!(code, Some(c) if (400..600).contains(&c) && !unverifiable_status(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_releases_everything() {
        for p in [
            Part::Headers {
                end_of_stream: false,
            },
            Part::Data {
                end_of_stream: true,
            },
            Part::Trailers,
        ] {
            assert_eq!(step(Gate::Open, p), Step::Release);
        }
    }

    #[test]
    fn buffering_decides_at_either_end() {
        let g = Gate::Buffering;
        assert_eq!(
            step(
                g,
                Part::Data {
                    end_of_stream: false
                }
            ),
            Step::Hold
        );
        assert_eq!(
            step(
                g,
                Part::Data {
                    end_of_stream: true
                }
            ),
            Step::Decide
        );
        assert_eq!(
            step(
                g,
                Part::Headers {
                    end_of_stream: true
                }
            ),
            Step::Decide
        );
        // The trailers bypass: a trailers frame ends the stream too.
        assert_eq!(step(g, Part::Trailers), Step::Decide);
    }

    #[test]
    fn waiting_and_closed_hold_everything() {
        for g in [Gate::Waiting, Gate::Closed] {
            for p in [
                Part::Data {
                    end_of_stream: false,
                },
                Part::Data {
                    end_of_stream: true,
                },
                Part::Trailers,
            ] {
                assert_eq!(step(g, p), Step::Hold, "{g:?} {p:?}");
            }
        }
    }

    #[test]
    fn unverifiable_statuses() {
        for s in [206, 304, 412] {
            assert!(unverifiable_status(s));
        }
        for s in [200, 201, 301, 400, 403, 404, 410, 500] {
            assert!(!unverifiable_status(s));
        }
    }

    #[test]
    fn entries_without_resource() {
        assert!(entry_without_resource_passes(Some("404 Not Found")));
        assert!(entry_without_resource_passes(Some("410")));
        assert!(entry_without_resource_passes(Some("500")));
        assert!(!entry_without_resource_passes(Some("304 Not Modified")));
        assert!(!entry_without_resource_passes(Some(
            "412 Precondition Failed"
        )));
        assert!(!entry_without_resource_passes(Some("200 OK")));
        assert!(!entry_without_resource_passes(Some("")));
        assert!(!entry_without_resource_passes(Some("4")));
        assert!(!entry_without_resource_passes(None));
    }

    #[test]
    fn conditional_headers_are_lowercase() {
        for h in CONDITIONAL_READ_HEADERS {
            assert_eq!(h, h.to_ascii_lowercase());
        }
    }
}
