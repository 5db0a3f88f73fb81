//! Citus readiness of the tenant migrations (SPEC §8): each tenant schema must be able to
//! become one distributed schema under `citus.enable_schema_based_sharding`, and be moved
//! between nodes (by logical replication, which needs a primary key on every table).
//!
//! [`check`] reads the migrations' SQL and names every statement that breaks one of these
//! rules; a unit test runs it over `tenant_migrations/`, so a migration that would stop
//! the move to Citus fails the build's tests rather than the migration day. It is a
//! lexical check of the DDL we write (comments and string literals set aside, `DO` bodies
//! read as text), not a SQL parser: it errs towards naming a statement for a person to
//! look at.

use std::collections::{BTreeMap, HashSet};

use super::migrations::TenantMigrations;

/// A statement of a migration that Citus schema-based sharding would refuse or break on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The migration, as `V3__inventory_and_sales`.
    pub migration: String,
    pub problem: String,
}

/// Every finding over `migrations`, in order.
pub fn check(migrations: &TenantMigrations) -> Vec<Finding> {
    let mut state = State::default();
    for migration in migrations.iter() {
        let name = format!("V{}__{}", migration.version(), migration.name());
        for statement in statements(migration.sql().unwrap_or_default()) {
            state.statement(&name, &statement);
        }
    }
    state.finish()
}

#[derive(Default)]
struct State {
    findings: Vec<Finding>,
    tables: HashSet<String>,
    /// Tables created without a primary key so far, with the migration that made them.
    without_key: BTreeMap<String, String>,
}

/// DDL that acts on the database or the cluster, not on the tenant's schema.
const NOT_TENANT_DDL: [&str; 9] = [
    "create extension",
    "create role",
    "alter role",
    "create user",
    "create database",
    "alter system",
    "create schema",
    "alter schema",
    "alter default privileges",
];

/// Functions whose value changes per call: Citus refuses them in the WHERE of an
/// UPDATE or DELETE on a distributed table.
const VOLATILE: [&str; 5] = [
    "random(",
    "nextval(",
    "currval(",
    "clock_timestamp(",
    "gen_random_uuid(",
];

impl State {
    fn flag(&mut self, migration: &str, problem: String) {
        self.findings.push(Finding {
            migration: migration.to_string(),
            problem,
        });
    }

    fn statement(&mut self, migration: &str, sql: &str) {
        let words: Vec<&str> = sql.split_whitespace().collect();
        let text = words.join(" ");
        let starts = |prefix: &str| text.starts_with(prefix);
        let short: String = text.chars().take(80).collect();

        for ddl in NOT_TENANT_DDL {
            if starts(ddl) {
                self.flag(
                    migration,
                    format!("`{ddl}` acts outside the tenant's schema: `{short}`"),
                );
            }
        }
        if starts("create rule") {
            self.flag(
                migration,
                format!("rules are not supported by Citus: `{short}`"),
            );
        }
        if text.contains(" concurrently") {
            self.flag(
                migration,
                format!("CONCURRENTLY cannot run in the migration's transaction: `{short}`"),
            );
        }
        if let Some(table) = created_table(&text) {
            self.created(migration, &text, &table, &short);
        }
        if starts("alter table") {
            let table = table_after(&text, "alter table");
            if text.contains(" set schema ") {
                self.flag(
                    migration,
                    format!("moving a table out of the tenant schema: `{short}`"),
                );
            }
            if text.contains("primary key")
                && let Some(table) = table
            {
                self.without_key.remove(&table);
            }
        }
        if (starts("update") || starts("delete"))
            && let Some((_, filter)) = text.split_once(" where ")
            && let Some(f) = VOLATILE.iter().find(|f| filter.contains(*f))
        {
            self.flag(
                migration,
                format!("volatile `{f}…)` in the WHERE of an UPDATE/DELETE: `{short}`"),
            );
        }
        if words.iter().any(|w| {
            matches!(
                w.trim_end_matches(','),
                "serial" | "smallserial" | "serial4" | "serial2"
            )
        }) || (starts("create sequence")
            && (text.contains(" as integer") || text.contains(" as smallint")))
        {
            self.flag(
                migration,
                format!("a sequence smaller than bigint (Citus numbers them per node): `{short}`"),
            );
        }
        for target in referenced_tables(&text) {
            if target.contains('.') {
                self.flag(
                    migration,
                    format!("foreign key out of the tenant schema, to `{target}`"),
                );
            } else if !self.tables.contains(&target) {
                self.flag(
                    migration,
                    format!("foreign key to `{target}`, which no tenant migration creates"),
                );
            }
        }
    }

    fn created(&mut self, migration: &str, text: &str, table: &str, short: &str) {
        if table.contains('.') {
            self.flag(
                migration,
                format!("table created outside the tenant schema: `{table}`"),
            );
        }
        for (marker, why) in [
            (" partition of ", "partitions"),
            (" partition by ", "partitioned tables"),
            (" inherits ", "table inheritance"),
        ] {
            if text.contains(marker) {
                self.flag(
                    migration,
                    format!("{why} are not supported in a distributed schema: `{short}`"),
                );
            }
        }
        if text.starts_with("create temp") || text.starts_with("create foreign") {
            self.flag(
                migration,
                format!("temporary and foreign tables cannot be distributed: `{short}`"),
            );
        }
        self.tables.insert(table.to_string());
        if !text.contains("primary key") {
            self.without_key
                .insert(table.to_string(), migration.to_string());
        }
    }

    fn finish(mut self) -> Vec<Finding> {
        for (table, migration) in std::mem::take(&mut self.without_key) {
            self.flag(
                &migration,
                format!(
                    "table `{table}` has no primary key (Citus moves a schema by logical replication)"
                ),
            );
        }
        self.findings
    }
}

/// The table a `CREATE … TABLE` statement makes.
fn created_table(text: &str) -> Option<String> {
    let rest = text.strip_prefix("create ")?;
    let (_, after) = rest.split_once("table ")?;
    // Only the words between CREATE and TABLE may be modifiers.
    let modifiers = &rest[..rest.len() - after.len() - "table ".len()];
    if !modifiers.split_whitespace().all(|m| {
        matches!(
            m,
            "temp" | "temporary" | "unlogged" | "foreign" | "global" | "local"
        )
    }) {
        return None;
    }
    name_at(after.trim_start_matches("if not exists "))
}

fn table_after(text: &str, prefix: &str) -> Option<String> {
    let rest = text.strip_prefix(prefix)?.trim_start();
    let rest = rest
        .trim_start_matches("if exists ")
        .trim_start_matches("only ");
    name_at(rest)
}

/// The identifier at the start of `text`, up to a space or an opening bracket.
fn name_at(text: &str) -> Option<String> {
    let name: String = text
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '(')
        .filter(|c| *c != '"')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The tables named after `references`.
fn referenced_tables(text: &str) -> Vec<String> {
    text.split(" references ")
        .skip(1)
        .filter_map(name_at)
        .collect()
}

/// The statements of `sql`, lower-cased, with comments removed and string literals
/// emptied; a dollar-quoted body (a `DO` block) is kept as text, so that what it runs is
/// read too.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                current.push(' ');
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
                current.push(' ');
            }
            '\'' => {
                // '' inside a literal is a quote: both halves are skipped in turn.
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                }
                current.push_str("''");
            }
            '$' if chars.peek() == Some(&'$') => {
                chars.next();
                current.push(' ');
            }
            ';' => {
                out.push(std::mem::take(&mut current));
            }
            c => current.extend(c.to_lowercase()),
        }
    }
    out.push(current);
    out.into_iter()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(extra: &str) -> Vec<String> {
        let set = TenantMigrations::embedded()
            .and_then("V900__candidate", extra)
            .unwrap();
        check(&set)
            .into_iter()
            .inspect(|f| assert_eq!(f.migration, "V900__candidate", "{f:?}"))
            .map(|f| f.problem)
            .collect()
    }

    #[test]
    fn the_tenant_migrations_are_ready_for_citus() {
        let findings = check(&TenantMigrations::embedded());
        assert!(findings.is_empty(), "{findings:#?}");
    }

    #[test]
    fn a_foreign_key_out_of_the_schema_is_named() {
        let found = problems(
            "CREATE TABLE notes (id uuid PRIMARY KEY, author uuid REFERENCES public.users (id))",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("out of the tenant schema, to `public.users`"));
        let found = problems("ALTER TABLE estates ADD COLUMN owner uuid REFERENCES \"Users\" (id)");
        assert!(
            found[0].contains("which no tenant migration creates"),
            "{found:?}"
        );
        // Within the schema: fine.
        assert!(
            problems("ALTER TABLE payments ADD COLUMN estate uuid REFERENCES estates (id)")
                .is_empty()
        );
    }

    #[test]
    fn a_table_without_a_primary_key_is_named_unless_one_is_added() {
        let found = problems("CREATE TABLE notes (body text NOT NULL)");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("`notes` has no primary key"));
        assert!(
            problems(
                "CREATE TABLE notes (id uuid NOT NULL, body text);
                 ALTER TABLE notes ADD CONSTRAINT notes_pkey PRIMARY KEY (id);"
            )
            .is_empty()
        );
    }

    #[test]
    fn ddl_citus_does_not_support_in_a_distributed_schema_is_named() {
        for (sql, expected) in [
            (
                "CREATE TABLE logs (id uuid PRIMARY KEY, at date) PARTITION BY RANGE (at)",
                "partitioned",
            ),
            (
                "CREATE TABLE old_estates (id uuid PRIMARY KEY) INHERITS (estates)",
                "inheritance",
            ),
            (
                "CREATE TEMP TABLE scratch (id uuid PRIMARY KEY)",
                "temporary",
            ),
            (
                "CREATE INDEX CONCURRENTLY estates_name ON estates (name)",
                "CONCURRENTLY",
            ),
            (
                "CREATE RULE no_delete AS ON DELETE TO estates DO INSTEAD NOTHING",
                "rules",
            ),
            ("CREATE EXTENSION pg_trgm", "`create extension`"),
            ("ALTER TABLE estates SET SCHEMA public", "moving a table"),
            (
                "CREATE TABLE counters (id serial PRIMARY KEY)",
                "smaller than bigint",
            ),
            (
                "UPDATE estates SET name = 'x' WHERE random() < 0.5",
                "volatile `random(",
            ),
            (
                "CREATE TABLE public.shared_notes (id uuid PRIMARY KEY)",
                "outside the tenant schema",
            ),
        ] {
            let found = problems(sql);
            assert!(
                found.iter().any(|p| p.contains(expected)),
                "{sql}: expected `{expected}` in {found:?}"
            );
        }
    }

    #[test]
    fn comments_and_string_literals_are_not_read_as_sql() {
        assert!(
            problems(
                "-- a note: REFERENCES public.users would be wrong here
                 /* so would CREATE EXTENSION */
                 COMMENT ON TABLE estates IS 'see REFERENCES public.users; serial';"
            )
            .is_empty()
        );
    }
}
