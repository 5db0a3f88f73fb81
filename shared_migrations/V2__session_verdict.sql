-- Whether an access token still counts: not revoked, its user active and still of the
-- role the token names, its company neither deleted nor (except for reads by the owner)
-- suspended. Answers 'ok' or the reason for refusal.
--
-- It runs inside the first round trip of every tenant transaction, before SET LOCAL ROLE,
-- so checking a session costs no round trip of its own. plpgsql so that each backend
-- plans the lookup once and reuses the plan.
CREATE FUNCTION session_verdict(
    p_user uuid, p_company uuid, p_jti uuid, p_role text, p_read_only boolean
) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    verdict text;
BEGIN
    SELECT CASE
               WHEN u.id IS NULL THEN 'unknown'
               WHEN EXISTS (SELECT 1 FROM public.revoked_access_tokens r WHERE r.jti = p_jti) THEN 'revoked'
               WHEN NOT u.is_active THEN 'inactive'
               WHEN u.role <> p_role THEN 'role_changed'
               WHEN c.status = 'deleted' THEN 'deleted'
               WHEN c.status = 'suspended' AND NOT (p_read_only AND u.role = 'owner') THEN 'suspended'
               ELSE 'ok'
           END
      INTO verdict
      FROM (SELECT 1) AS one
      LEFT JOIN public.users u ON u.id = p_user AND u.company_id = p_company
      LEFT JOIN public.companies c ON c.id = u.company_id;
    RETURN verdict;
END
$$;

REVOKE ALL ON FUNCTION session_verdict(uuid, uuid, uuid, text, boolean) FROM PUBLIC;
