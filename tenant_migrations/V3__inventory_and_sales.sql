-- Properties (plots) in estates, clients, allocations of properties to clients, and the
-- payments made on allocations. Foreign keys stay inside the schema (Citus).

CREATE TABLE properties (
    id           uuid PRIMARY KEY,
    estate_id    uuid NOT NULL REFERENCES estates (id) ON DELETE RESTRICT,
    plot_number  text NOT NULL,
    size_sqm     numeric(12, 2) NOT NULL CHECK (size_sqm > 0),
    price        numeric(14, 2) NOT NULL CHECK (price >= 0),
    status       text NOT NULL DEFAULT 'available'
                 CHECK (status IN ('available', 'reserved', 'allocated', 'sold')),
    created_by   uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT properties_plot_number_key UNIQUE (estate_id, plot_number)
);
-- The common listing: an estate's available plots, dearest first.
CREATE INDEX properties_estate_status_price_idx ON properties (estate_id, status, price DESC);
CREATE INDEX properties_created_at_idx ON properties (created_at, id);

CREATE TABLE clients (
    id          uuid PRIMARY KEY,
    full_name   text NOT NULL,
    email       text NOT NULL DEFAULT '',
    phone       text NOT NULL DEFAULT '',
    created_by  uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    search      tsvector GENERATED ALWAYS AS (
                    to_tsvector('simple'::regconfig, full_name || ' ' || email || ' ' || phone)
                ) STORED
);
CREATE INDEX clients_created_at_idx ON clients (created_at, id);
CREATE INDEX clients_search_idx ON clients USING gin (search);

CREATE TABLE allocations (
    id            uuid PRIMARY KEY,
    property_id   uuid NOT NULL REFERENCES properties (id) ON DELETE RESTRICT,
    client_id     uuid NOT NULL REFERENCES clients (id) ON DELETE RESTRICT,
    payment_plan  text NOT NULL CHECK (payment_plan IN ('outright', 'installment')),
    total_price   numeric(14, 2) NOT NULL CHECK (total_price >= 0),
    amount_paid   numeric(14, 2) NOT NULL DEFAULT 0 CHECK (amount_paid >= 0),
    balance       numeric(14, 2) GENERATED ALWAYS AS (total_price - amount_paid) STORED,
    status        text NOT NULL DEFAULT 'active'
                  CHECK (status IN ('active', 'completed', 'cancelled')),
    created_by    uuid NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT allocations_not_overpaid CHECK (amount_paid <= total_price)
);
-- A property is allocated at most once at a time, whatever the concurrency.
CREATE UNIQUE INDEX allocations_one_per_property ON allocations (property_id) WHERE status <> 'cancelled';
CREATE INDEX allocations_client_id_idx ON allocations (client_id);
CREATE INDEX allocations_created_at_idx ON allocations (created_at, id);

-- Payments on allocations; the API calls them transactions.
CREATE TABLE payments (
    id             uuid PRIMARY KEY,
    allocation_id  uuid NOT NULL REFERENCES allocations (id) ON DELETE RESTRICT,
    amount         numeric(14, 2) NOT NULL CHECK (amount > 0),
    method         text NOT NULL CHECK (method IN ('cash', 'bank_transfer', 'card', 'stripe')),
    reference      text NOT NULL DEFAULT '',
    paid_at        timestamptz NOT NULL DEFAULT now(),
    recorded_by    uuid NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_allocation_id_idx ON payments (allocation_id, paid_at);
CREATE INDEX payments_paid_at_idx ON payments (paid_at, id);
