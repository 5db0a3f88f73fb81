//! Shared pieces of list endpoints: the `next` / `previous` links.

use chrono::{DateTime, Utc};
use poem::Request;

use uuid::Uuid;

use crate::domain::listing::{Ordering, Page, PageRequest, parse_ids};
use crate::error::FieldErrors;

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

/// The query parameters every list endpoint takes, parsed.
pub struct ListParams {
    pub page: PageRequest,
    pub ordering: Ordering,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub ids: Option<Vec<Uuid>>,
    pub search: Option<String>,
}

/// The common list parameters as sent.
pub struct RawListParams {
    pub page: Option<i64>,
    pub page_size: Option<i64>,
    pub ordering: Option<String>,
    pub created_after: Option<String>,
    pub created_before: Option<String>,
    pub ids: Option<String>,
    pub search: Option<String>,
}

impl RawListParams {
    /// Parses them, recording each bad one in `errors`; `None` when any was bad.
    pub fn parse(
        self,
        errors: &mut FieldErrors,
        ordering_fields: &[&'static str],
        default_ordering: Ordering,
    ) -> Option<ListParams> {
        let page = errors.check("page", PageRequest::parse_page(self.page));
        let page_size = errors.check("page_size", PageRequest::parse_page_size(self.page_size));
        let ordering = errors.check(
            "ordering",
            Ordering::parse(self.ordering.as_deref(), ordering_fields, default_ordering),
        );
        let created_after =
            errors.check("created_after", parse_time(self.created_after.as_deref()));
        let created_before =
            errors.check("created_before", parse_time(self.created_before.as_deref()));
        let ids = errors.check("ids", self.ids.as_deref().map(parse_ids).transpose());
        let search = self
            .search
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        if search.as_ref().is_some_and(|s| s.chars().count() > 200) {
            errors.add("search", "must be at most 200 characters");
        }
        Some(ListParams {
            page: PageRequest {
                page: page?,
                page_size: page_size?,
            },
            ordering: ordering?,
            created_after: created_after?,
            created_before: created_before?,
            ids: ids?,
            search,
        })
    }
}
