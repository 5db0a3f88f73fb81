//! `GET /metrics` in the Prometheus text format: requests and latency by route, method and
//! status; the connection pool and where tenant transactions found their connections
//! (home lane or away); jobs by state and the outbox's lag.
//!
//! Each application owns its recorder (no process-wide global), so several servers in one
//! process — the tests — keep separate counts. Gauges are sampled when scraped.

use metrics::{counter, gauge, histogram, with_local_recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use crate::db::Db;

/// Latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub struct Metrics {
    recorder: PrometheusRecorder,
    /// The API's routes (from its OpenAPI document): a path that is none of them counts as
    /// `unmatched`, so scanners cannot make one series per path they try.
    routes: std::collections::HashSet<String>,
}

/// A path with its ids replaced by `{id}`, so that a route is one series, not one per
/// object.
pub fn route_of(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if uuid::Uuid::parse_str(segment).is_ok() {
                "{id}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl Metrics {
    /// `routes`: every route template the server answers (`/api/v1/estates/{id}`…).
    pub fn new(routes: impl IntoIterator<Item = String>) -> Self {
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets(&BUCKETS) {
            Ok(b) => b,
            Err(_) => PrometheusBuilder::new(),
        };
        let routes = routes.into_iter().collect();
        Metrics {
            recorder: builder.build_recorder(),
            routes,
        }
    }

    /// The route label of a request path.
    fn route(&self, path: &str) -> String {
        let route = route_of(path);
        if self.routes.contains(&route) {
            route
        } else if path.starts_with("/docs") {
            "/docs".into()
        } else {
            "unmatched".into()
        }
    }

    pub fn observe_request(&self, method: &str, path: &str, status: u16, seconds: f64) {
        let labels = [
            ("method", method.to_string()),
            ("route", self.route(path)),
            ("status", status.to_string()),
        ];
        with_local_recorder(&self.recorder, || {
            counter!("http_requests_total", &labels).increment(1);
            histogram!("http_request_duration_seconds", &labels).record(seconds);
        });
    }

    /// The exposition, with the pool, job and outbox gauges sampled now. A failed sample
    /// (database away) leaves those gauges out rather than failing the scrape.
    pub async fn render(&self, db: &Db) -> String {
        let pool = db.pool_status();
        let (home, away) = db.lane_use().counts();
        let waited = db.lane_use().waited();
        let jobs = async {
            db.shared()
                .await
                .ok()?
                .query_one(
                    "SELECT (SELECT count(*) FROM outbox WHERE relayed_at IS NULL),
                            (SELECT count(*) FROM outbox WHERE relayed_at IS NOT NULL),
                            (SELECT count(*) FROM job_effects),
                            (SELECT count(*) FROM dead_jobs),
                            (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
                             FROM outbox WHERE relayed_at IS NULL)",
                    &[],
                )
                .await
                .ok()
        }
        .await;
        with_local_recorder(&self.recorder, || {
            gauge!("db_pool_connections", "state" => "open").set(pool.size as f64);
            gauge!("db_pool_connections", "state" => "idle").set(pool.available as f64);
            gauge!("db_pool_connections", "state" => "max").set(pool.max_size as f64);
            gauge!("db_pool_waiting").set(pool.waiting as f64);
            counter!("db_tenant_transactions_total", "lane" => "home").absolute(home);
            counter!("db_tenant_transactions_total", "lane" => "away").absolute(away);
            counter!("db_tenant_transactions_waited_total").absolute(waited);
            if let Some(row) = &jobs {
                for (i, state) in ["pending", "relayed", "done", "dead"].iter().enumerate() {
                    gauge!("jobs", "state" => *state).set(row.get::<_, i64>(i) as f64);
                }
                gauge!("outbox_lag_seconds").set(row.get::<_, f64>(4));
            }
        });
        self.recorder.handle().render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_paths_become_one_route() {
        assert_eq!(
            route_of("/api/v1/estates/0191e6a4-3c2f-7d1a-9b1e-2f3a4b5c6d7e/statistics"),
            "/api/v1/estates/{id}/statistics"
        );
        assert_eq!(route_of("/api/v1/estates"), "/api/v1/estates");
    }

    #[test]
    fn unknown_paths_share_one_label() {
        let metrics = Metrics::new([
            "/api/v1/estates".to_string(),
            "/api/v1/allocations/{id}/payment_history".to_string(),
        ]);
        assert_eq!(metrics.route("/api/v1/estates"), "/api/v1/estates");
        assert_eq!(
            metrics
                .route("/api/v1/allocations/0191e6a4-3c2f-7d1a-9b1e-2f3a4b5c6d7e/payment_history"),
            "/api/v1/allocations/{id}/payment_history"
        );
        assert_eq!(metrics.route("/wp-admin/setup.php"), "unmatched");
        assert_eq!(metrics.route("/api/v1/nope/123"), "unmatched");
    }
}
