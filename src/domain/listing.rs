//! Pagination and ordering for list endpoints (SPEC §4): `page`, `page_size` (≤ 100),
//! `ordering=field` / `-field`, answered as `{count, next, previous, results}`.

use deadpool_postgres::Object;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::db::tenancy::TenantTx;
use crate::error::AppError;

pub const DEFAULT_PAGE_SIZE: i64 = 20;
pub const MAX_PAGE_SIZE: i64 = 100;
pub const MAX_IDS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: i64,
    pub page_size: i64,
}

impl PageRequest {
    pub fn parse_page(page: Option<i64>) -> Result<i64, String> {
        match page {
            None => Ok(1),
            Some(p) if (1..=1_000_000).contains(&p) => Ok(p),
            Some(_) => Err("must be a whole number from 1 to 1000000".into()),
        }
    }

    pub fn parse_page_size(size: Option<i64>) -> Result<i64, String> {
        match size {
            None => Ok(DEFAULT_PAGE_SIZE),
            Some(s) if (1..=MAX_PAGE_SIZE).contains(&s) => Ok(s),
            Some(_) => Err(format!("must be a whole number from 1 to {MAX_PAGE_SIZE}")),
        }
    }

    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.page_size
    }

    /// `[LIMIT, OFFSET]` values, for [`Filters::page_params`].
    pub fn limit_offset(&self) -> [i64; 2] {
        [self.page_size, self.offset()]
    }
}

/// One page of results and the total across all pages.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub count: i64,
    pub request: PageRequest,
    pub results: Vec<T>,
}

impl<T> Page<T> {
    pub fn has_next(&self) -> bool {
        self.request.offset() + (self.results.len() as i64) < self.count
    }
    pub fn has_previous(&self) -> bool {
        self.request.page > 1
    }
}

/// An `ORDER BY` over a whitelisted column, parsed from `field` or `-field`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ordering {
    pub column: &'static str,
    pub descending: bool,
}

impl Ordering {
    pub fn parse(
        raw: Option<&str>,
        allowed: &[&'static str],
        default: Ordering,
    ) -> Result<Ordering, String> {
        let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(default);
        };
        let (descending, name) = match raw.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, raw),
        };
        allowed
            .iter()
            .find(|c| **c == name)
            .map(|column| Ordering { column, descending })
            .ok_or_else(|| {
                format!(
                    "must be one of {}, optionally prefixed with -",
                    allowed.join(", ")
                )
            })
    }

    /// The `ORDER BY` clause; `id` breaks ties so that pages never overlap.
    pub fn sql(&self) -> String {
        let dir = if self.descending { "DESC" } else { "ASC" };
        format!("ORDER BY {} {dir}, id {dir}", self.column)
    }
}

/// The `WHERE` conditions of a list query and their parameters, built from parsed filters
/// only: column names and operators are program text, values always travel as parameters.
#[derive(Default)]
pub struct Filters {
    conditions: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Filters {
    /// Adds `AND <condition>`, where every `?` stands for `value`'s parameter.
    pub fn and(&mut self, condition: &'static str, value: impl ToSql + Sync + Send + 'static) {
        self.params.push(Box::new(value));
        let placeholder = format!("${}", self.params.len());
        self.conditions.push_str(" AND ");
        self.conditions
            .push_str(&condition.replace('?', &placeholder));
    }

    /// The page query: `columns`, then the total as a window count in the last column,
    /// so one statement answers both; its last two parameters are limit and offset.
    pub fn page_sql(&self, columns: &str, from: &str, ordering: &Ordering) -> String {
        let n = self.params.len();
        format!(
            "SELECT {columns}, count(*) OVER () FROM {from} WHERE true{} {} LIMIT ${} OFFSET ${}",
            self.conditions,
            ordering.sql(),
            n + 1,
            n + 2
        )
    }

    /// The count alone, for a page past the end (which has no row to carry the total).
    pub fn count_sql(&self, from: &str) -> String {
        format!("SELECT count(*) FROM {from} WHERE true{}", self.conditions)
    }

    /// The ` AND …` conditions, for statements other than a page.
    pub fn conditions(&self) -> &str {
        &self.conditions
    }

    /// The parameters, owned, for a statement that outlives the filters (a stream).
    pub fn into_params(self) -> Vec<Box<dyn ToSql + Sync + Send>> {
        self.params
    }

    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| p.as_ref() as _).collect()
    }

    /// The filter parameters followed by limit and offset, for [`Filters::page_sql`].
    pub fn page_params<'a>(&'a self, limit_offset: &'a [i64; 2]) -> Vec<&'a (dyn ToSql + Sync)> {
        let mut params = self.params();
        params.push(&limit_offset[0]);
        params.push(&limit_offset[1]);
        params
    }
}

/// Where a list query runs: a tenant transaction or a shared-schema connection.
pub trait Queryable {
    fn rows(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, AppError>> + Send;
}

impl Queryable for TenantTx {
    async fn rows(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, AppError> {
        Ok(self.query(sql, params).await?)
    }
}

impl Queryable for deadpool_postgres::Transaction<'_> {
    async fn rows(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, AppError> {
        let statement = self.prepare_cached(sql).await?;
        Ok(self.query(&statement, params).await?)
    }
}

impl Queryable for Object {
    async fn rows(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, AppError> {
        let statement = self.prepare_cached(sql).await?;
        Ok(self.query(&statement, params).await?)
    }
}

/// How a tenant table's rows become values: its columns (a list query appends the window
/// count after them), its table, and the name of one row in a 404.
pub struct Listing<T> {
    pub columns: &'static str,
    pub column_count: usize,
    pub from: &'static str,
    pub noun: &'static str,
    pub from_row: fn(&Row) -> Result<T, AppError>,
}

impl<T> Listing<T> {
    /// One row by id, locked `FOR UPDATE` when the caller is about to change it; 404 when
    /// there is none (in this tenant).
    pub async fn find(&self, tx: &mut TenantTx, id: Uuid, lock: bool) -> Result<T, AppError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE id = $1{}",
            self.columns,
            self.from,
            if lock { " FOR UPDATE" } else { "" }
        );
        match tx.query_opt(&sql, &[&id]).await? {
            Some(row) => (self.from_row)(&row),
            None => Err(AppError::NotFound(self.noun)),
        }
    }
}

/// Fetches one page: one statement, unless the page is past the end (then a count).
pub async fn fetch_page<T>(
    db: &mut impl Queryable,
    listing: &Listing<T>,
    filters: &Filters,
    ordering: &Ordering,
    page: PageRequest,
) -> Result<Page<T>, AppError> {
    let limit_offset = page.limit_offset();
    let sql = filters.page_sql(listing.columns, listing.from, ordering);
    let rows = db.rows(&sql, &filters.page_params(&limit_offset)).await?;
    let count = match rows.first() {
        Some(row) => row.try_get::<_, i64>(listing.column_count)?,
        None if page.page > 1 => db
            .rows(&filters.count_sql(listing.from), &filters.params())
            .await?[0]
            .try_get(0)?,
        None => 0,
    };
    let results = rows
        .iter()
        .map(listing.from_row)
        .collect::<Result<_, _>>()?;
    Ok(Page {
        count,
        request: page,
        results,
    })
}

/// `%`, `_` and `\` taken literally in a LIKE pattern.
pub fn like_pattern(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// `ids=a,b,c` as a list of UUIDs.
pub fn parse_ids(raw: &str) -> Result<Vec<Uuid>, String> {
    let ids: Result<Vec<Uuid>, _> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Uuid::parse_str)
        .collect();
    let ids = ids.map_err(|_| "must be a comma-separated list of UUIDs".to_string())?;
    if ids.len() > MAX_IDS {
        return Err(format!("must list at most {MAX_IDS} ids"));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Ordering = Ordering {
        column: "created_at",
        descending: true,
    };

    #[test]
    fn ordering_is_whitelisted() {
        let allowed = ["name", "created_at"];
        assert_eq!(
            Ordering::parse(Some("-name"), &allowed, DEFAULT)
                .unwrap()
                .sql(),
            "ORDER BY name DESC, id DESC"
        );
        assert_eq!(Ordering::parse(None, &allowed, DEFAULT).unwrap(), DEFAULT);
        assert!(Ordering::parse(Some("name; DROP TABLE x"), &allowed, DEFAULT).is_err());
        assert!(Ordering::parse(Some("--name"), &allowed, DEFAULT).is_err());
    }

    #[test]
    fn page_bounds() {
        assert_eq!(PageRequest::parse_page_size(Some(100)), Ok(100));
        assert!(PageRequest::parse_page_size(Some(101)).is_err());
        assert!(PageRequest::parse_page_size(Some(0)).is_err());
        assert!(PageRequest::parse_page(Some(0)).is_err());
        let page = Page {
            count: 45,
            request: PageRequest {
                page: 3,
                page_size: 20,
            },
            results: vec![(); 5],
        };
        assert!(!page.has_next());
        assert!(page.has_previous());
    }

    #[test]
    fn ids() {
        let a = Uuid::new_v4();
        assert_eq!(parse_ids(&format!("{a}, {a}")).unwrap(), vec![a, a]);
        assert!(parse_ids("nope").is_err());
    }
}
