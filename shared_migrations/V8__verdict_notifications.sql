-- Every change a login session's verdict depends on (src/auth/verdict.rs) is announced on
-- the `estate_verdicts` channel when it commits, whoever makes it: a server process, a
-- worker, an operator in psql. Each server process listens and drops the verdicts it
-- remembers, so it may remember them for longer than the second it would otherwise wait
-- for a change made elsewhere. Statement-level: one notification per statement, and
-- PostgreSQL folds identical ones within a transaction.
CREATE FUNCTION estate_verdicts_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('estate_verdicts', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER users_verdicts_changed
    AFTER UPDATE OF is_active, role, company_id OR DELETE OR TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION estate_verdicts_changed();

CREATE TRIGGER companies_verdicts_changed
    AFTER UPDATE OF status OR DELETE OR TRUNCATE ON companies
    FOR EACH STATEMENT EXECUTE FUNCTION estate_verdicts_changed();

CREATE TRIGGER revoked_access_tokens_verdicts_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON revoked_access_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION estate_verdicts_changed();
