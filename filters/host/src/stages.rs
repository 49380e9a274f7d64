//! Per-stage timing for profiling builds only (`--features stage-timing` on a filter; see
//! bench/README.md, "Where the time goes"). Without the feature every function here is an
//! empty inline function and no clock is read. With it, each stage's host-clock time is
//! summed per worker and logged (warn) every `REPORT_EVERY` requests as average ns.

#[cfg(feature = "stage-timing")]
mod imp {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::time::UNIX_EPOCH;

    const REPORT_EVERY: u64 = 20_000;

    thread_local! {
        static ACC: RefCell<BTreeMap<&'static str, (u64, u64)>> = const { RefCell::new(BTreeMap::new()) };
    }

    /// Host clock in ns (one host call).
    pub fn now() -> u64 {
        proxy_wasm::hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64)
    }

    /// Adds the time since `since` to `stage`.
    pub fn add(stage: &'static str, since: u64) {
        let d = now().saturating_sub(since);
        ACC.with(|a| {
            let mut a = a.borrow_mut();
            let e = a.entry(stage).or_insert((0, 0));
            e.0 += d;
            e.1 += 1;
        });
    }

    /// Logs every stage's average when `stage` has been counted `REPORT_EVERY` times, then
    /// starts over. Also measures the clock's own cost (`clock`: two reads back to back).
    pub fn report(filter: &str, stage: &'static str) {
        let t = now();
        add("clock", t);
        let due = ACC.with(|a| a.borrow().get(stage).is_some_and(|e| e.1 >= REPORT_EVERY));
        if !due {
            return;
        }
        let line = ACC.with(|a| {
            let mut a = a.borrow_mut();
            let s: Vec<String> = a
                .iter()
                .map(|(k, (ns, n))| format!("{k}={}ns/{n}", ns / (*n).max(1)))
                .collect();
            a.clear();
            s.join(" ")
        });
        let _ = proxy_wasm::hostcalls::log(
            proxy_wasm::types::LogLevel::Warn,
            &format!("fapi_guard.{filter}: stage-timing {line}"),
        );
    }
}

#[cfg(not(feature = "stage-timing"))]
mod imp {
    #[inline(always)]
    pub fn now() -> u64 {
        0
    }
    #[inline(always)]
    pub fn add(_stage: &'static str, _since: u64) {}
    #[inline(always)]
    pub fn report(_filter: &str, _stage: &'static str) {}
}

pub use imp::{add, now, report};

/// Times a whole callback: adds its time to `stage` when dropped, then reports.
pub struct Guard {
    filter: &'static str,
    stage: &'static str,
    since: u64,
}

impl Guard {
    #[inline(always)]
    pub fn new(filter: &'static str, stage: &'static str) -> Guard {
        Guard {
            filter,
            stage,
            since: now(),
        }
    }
}

impl Drop for Guard {
    #[inline(always)]
    fn drop(&mut self) {
        add(self.stage, self.since);
        report(self.filter, self.stage);
    }
}
