//! Shared pieces of list endpoints: the `next` / `previous` links.

use chrono::{DateTime, Utc};
use poem::Request;

use crate::domain::listing::Page;

/// The request's own URL with `page` replaced; other parameters are kept as sent.
fn page_link(req: &Request, page: i64) -> String {
    let mut query: Vec<&str> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("page="))
        .collect();
    let page = format!("page={page}");
    query.push(&page);
    format!("{}?{}", req.uri().path(), query.join("&"))
}

/// `(next, previous)` links for a page of results.
pub fn links<T>(req: &Request, page: &Page<T>) -> (Option<String>, Option<String>) {
    let n = page.request.page;
    let next = page.has_next().then(|| page_link(req, n + 1));
    let previous = page.has_previous().then(|| page_link(req, n - 1));
    (next, previous)
}

/// An RFC 3339 query parameter, such as `created_after`.
pub fn parse_time(raw: Option<&str>) -> Result<Option<DateTime<Utc>>, String> {
    raw.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| "must be an RFC 3339 timestamp, e.g. 2026-01-31T00:00:00Z".to_string())
    })
    .transpose()
}
