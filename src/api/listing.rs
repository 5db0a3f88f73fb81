//! Shared pieces of list endpoints: the `next` / `previous` links.

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
