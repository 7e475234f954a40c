//! Counters exposed in Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::ErrorCode;

macro_rules! counters {
    ($($name:ident: $help:literal, $kind:literal;)*) => {
        /// Server counters and gauges.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(#[doc = $help] pub $name: AtomicU64,)*
            errors: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
        }

        impl Metrics {
            /// Prometheus text exposition (version 0.0.4).
            pub fn render(&self) -> String {
                let mut s = String::new();
                $(
                    let _ = writeln!(s, "# HELP sotto_{} {}", stringify!($name), $help);
                    let _ = writeln!(s, "# TYPE sotto_{} {}", stringify!($name), $kind);
                    let _ = writeln!(s, "sotto_{} {}", stringify!($name), self.$name.load(Ordering::Relaxed));
                )*
                let _ = writeln!(s, "# HELP sotto_error_frames_total Error frames sent, by code.");
                let _ = writeln!(s, "# TYPE sotto_error_frames_total counter");
                let errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
                for (code, n) in errors.iter() {
                    let _ = writeln!(s, "sotto_error_frames_total{{code=\"{code}\"}} {n}");
                }
                s
            }
        }
    };
}

counters! {
    connections_total: "WebSocket connections accepted.", "counter";
    connections_active: "Connections open now.", "gauge";
    connections_refused_total: "Connections closed at accept, before TLS: over the per-address limit of connections not logged in yet.", "counter";
    authenticated_active: "Authenticated connections open now.", "gauge";
    auth_failures_total: "Failed authentications.", "counter";
    envelopes_stored_total: "Envelopes committed to storage.", "counter";
    envelopes_delivered_total: "Envelope frames written to recipients (including redeliveries).", "counter";
    envelopes_acked_total: "Envelopes deleted on acknowledgement.", "counter";
    envelopes_expired_total: "Envelopes purged unacknowledged after their TTL.", "counter";
    bundles_fetched_total: "Prekey bundles handed out.", "counter";
    one_time_prekeys_withheld_total: "Bundle fetches served without a one-time prekey by the drain limits (per account and device, per device).", "counter";
}

impl Metrics {
    /// Counts an error frame.
    pub fn error(&self, code: ErrorCode) {
        let mut e = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *e.entry(code.as_str()).or_insert(0) += 1;
    }

    /// Adds one.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    pub fn dec(c: &AtomicU64) {
        c.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        Metrics::inc(&m.envelopes_stored_total);
        m.error(ErrorCode::RateLimited);
        let s = m.render();
        assert!(s.contains(
            "# TYPE sotto_envelopes_stored_total counter\nsotto_envelopes_stored_total 1\n"
        ));
        assert!(s.contains("sotto_error_frames_total{code=\"rate_limited\"} 1"));
    }
}
