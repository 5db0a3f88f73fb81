-- Estates of one company. Runs with search_path set to the company's schema: names are
-- unqualified, and nothing here refers to another schema (Citus schema-based sharding).
CREATE TABLE estates (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    location     text NOT NULL DEFAULT '',
    description  text NOT NULL DEFAULT '',
    status       text NOT NULL DEFAULT 'planning'
                 CHECK (status IN ('planning', 'active', 'sold_out', 'archived')),
    -- a public.users id, kept without a cross-schema foreign key
    created_by   uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    search       tsvector GENERATED ALWAYS AS (
                     to_tsvector('english'::regconfig,
                                 name || ' ' || location || ' ' || description)
                 ) STORED
);
-- No index on status: four values over a company's few dozen estates would not be used,
-- and every index is opened again each time a statement is re-planned for a tenant.
CREATE INDEX estates_created_at_idx ON estates (created_at, id);
CREATE INDEX estates_search_idx ON estates USING gin (search);
