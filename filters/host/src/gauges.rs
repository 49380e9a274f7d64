//! The filters' gauges (docs/platform-guide.md, "Metrics"): JWKS health per issuer and the
//! DPoP replay cache's occupancy against its capacity. Envoy keeps one gauge per name for the
//! whole proxy, whichever worker's VM sets it.
//!
//! - `fapi_guard.token.jwks.keys.<issuer>`: keys loaded for the issuer, set after every fetch
//!   answer (a failed fetch keeps the last good keys, so it keeps their count);
//! - `fapi_guard.token.jwks.last_success_timestamp_seconds.<issuer>`: Unix time of the last
//!   answer that was applied (changed or not); defined at 0 by the first answer, so an issuer
//!   whose keys never loaded shows as stale. A timestamp, not "seconds since": Prometheus
//!   computes the age (`time() - ...`) and the gauge need not be set every second.
//! - `fapi_guard.token.jwks.last_failure_timestamp_seconds.<issuer>`: Unix time of the last
//!   refused answer (0: none); failing now = later than the last success.
//! - `fapi_guard.dpop.replay_cache.live_proofs` / `.capacity`: `jti` entries recorded and not
//!   yet expired, and the most the cache holds (`ReplayConfig::capacity`).
//!
//! The issuer is the last part of the name; envoy/stats_config.py makes it the `issuer` label.

use std::cell::Cell;

use fapi_guard_core::dpop::policy::ReplayConfig;
use fapi_guard_core::dpop::replay::KeyBudget;
use fapi_guard_core::jwks_store::KeyRing;
use fapi_guard_core::policy::RemoteJwks;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

fn gauge(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Gauge, name).ok()
}

fn set(name: &str, value: u64) {
    if let Some(id) = gauge(name) {
        let _ = hostcalls::record_metric(id, value);
    }
}

/// After a fetch answer for issuer `index` was applied to `ring`; `failed_at`: the answer
/// was refused (the last good keys stay) at that time.
pub fn jwks(ring: &KeyRing, index: usize, remote: &RemoteJwks, failed_at: Option<i64>) {
    let Some(keys) = ring.issuers.get(index) else {
        return;
    };
    let count = keys.jwks.as_ref().map_or(0, |j| j.keys.len());
    set(
        &format!("fapi_guard.token.jwks.keys.{}", remote.issuer),
        count as u64,
    );
    let name = format!(
        "fapi_guard.token.jwks.last_success_timestamp_seconds.{}",
        remote.issuer
    );
    match keys.last_success {
        Some(t) => set(&name, u64::try_from(t).unwrap_or(0)),
        // Defined (at 0, "never") without overwriting another worker's value.
        None => {
            let _ = gauge(&name);
        }
    }
    let name = format!(
        "fapi_guard.token.jwks.last_failure_timestamp_seconds.{}",
        remote.issuer
    );
    match failed_at {
        Some(t) => set(&name, u64::try_from(t).unwrap_or(0)),
        None => {
            let _ = gauge(&name);
        }
    }
}

thread_local! {
    /// The VM's ids of `live_proofs` and `capacity`, and what this worker (its VM) last added
    /// to `live_proofs`.
    static REPLAY: Cell<(Option<(u32, u32)>, u64)> = const { Cell::new((None, 0)) };
}

/// Brings this worker's share of `fapi_guard.dpop.replay_cache.live_proofs` up to date: the
/// entries it recorded that are live at `now` (`KeyBudget::live_entries`). Each worker adds
/// its own share, so the gauge is the proxy's total. Host calls only when the share changed.
pub fn replay_cache(budget: &KeyBudget, cfg: &ReplayConfig, now: i64) {
    let live = budget.live_entries(cfg, now);
    let (ids, before) = REPLAY.with(Cell::get);
    if live == before && ids.is_some() {
        return;
    }
    let ids = ids.or_else(|| {
        Some((
            gauge("fapi_guard.dpop.replay_cache.live_proofs")?,
            gauge("fapi_guard.dpop.replay_cache.capacity")?,
        ))
    });
    let Some((live_id, capacity_id)) = ids else {
        return;
    };
    REPLAY.with(|s| s.set((ids, live)));
    let _ = hostcalls::record_metric(capacity_id, cfg.capacity());
    let delta = i64::try_from(live).unwrap_or(i64::MAX) - i64::try_from(before).unwrap_or(i64::MAX);
    if delta != 0 {
        let _ = hostcalls::increment_metric(live_id, delta);
    }
}
