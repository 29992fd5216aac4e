// The corpus's special cases, written by hand: each file is one pattern that real
// migrations use and that a catalog built from files must get right (or flag). Included by
// `corpus_ops.rs`; run after the modules, so they see the tables as the modules left them.

impl Gen {
    fn specials(&mut self) {
        self.special_reference_data();
        self.special_types();
        self.special_partitions();
        self.special_inheritance_and_copies();
        self.special_functions();
        self.special_blocks();
        self.special_search_path();
        self.special_odd_syntax();
    }

    /// Reference data: a table and a few hundred rows of seed data, as most schemas have.
    fn special_reference_data(&mut self) {
        let mut sql = String::from(
            "CREATE TABLE regions (\n    code         varchar(8) PRIMARY KEY,\n    name         text NOT NULL,\n    currency     char(3) NOT NULL,\n    phone_prefix varchar(6),\n    vat_rate     numeric(5, 2) NOT NULL DEFAULT 0,\n    in_eu        boolean NOT NULL DEFAULT false\n);\n\nINSERT INTO regions (code, name, currency, phone_prefix, vat_rate, in_eu) VALUES\n",
        );
        let mut rows = Vec::new();
        for i in 0..600 {
            let a = WORDS[i % WORDS.len()];
            let b = WORDS[(i / WORDS.len() + 3) % WORDS.len()];
            rows.push(format!(
                "    ('R{i:04}', '{} {}', '{}', '+{}', {}.{:02}, {})",
                capitalize(a),
                capitalize(b),
                ["EUR", "USD", "GBP", "CHF", "SEK"][i % 5],
                30 + i % 70,
                5 + i % 20,
                (i * 7) % 100,
                if i % 3 == 0 { "true" } else { "false" }
            ));
        }
        sql.push_str(&rows.join(",\n"));
        sql.push_str(";\n\nCREATE INDEX regions_currency_idx ON regions (currency);\nCOMMENT ON TABLE regions IS 'Sales regions with their currency and VAT; maintained by finance.';\n");
        self.file(
            "core",
            "regions_reference_data",
            "Sales regions and their VAT rates, as finance maintains them. Rows are reference data: \
             the application reads them and never writes them.",
            sql,
        );
    }

    /// Enum labels and type names change; columns and arrays follow.
    fn special_types(&mut self) {
        self.file(
            "core",
            "customer_tier_business",
            "Adds the business tier between pro and enterprise, and renames free to basic, as \
             marketing asked. Existing rows keep their tier.",
            "ALTER TYPE customer_tier ADD VALUE 'business' BEFORE 'enterprise';\n\
             ALTER TYPE customer_tier ADD VALUE IF NOT EXISTS 'pro';\n\
             ALTER TYPE customer_tier RENAME VALUE 'free' TO 'basic';\n\
             COMMENT ON TYPE customer_tier IS 'basic < pro < business < enterprise';\n"
                .to_owned(),
        );
        self.file(
            "core",
            "rename_customer_tier",
            "customer_tier becomes plan_tier: plans are sold to companies too. Columns of the \
             type (and of its array type) follow the rename.",
            "ALTER TYPE customer_tier RENAME TO plan_tier;\n\
             ALTER TABLE customers RENAME COLUMN display_name TO full_name;\n\
             ALTER TABLE customers ALTER COLUMN full_name TYPE varchar(200);\n\
             ALTER DOMAIN money_amount RENAME TO amount;\n\
             CREATE INDEX customers_tier_idx ON customers (tier) WHERE tier <> 'basic';\n"
                .to_owned(),
        );
        self.file(
            "sales",
            "order_status_refunds",
            "Refunds get their own order status; cancelled is spelled the American way from now on.",
            "ALTER TYPE order_status ADD VALUE 'refunded' AFTER 'shipped';\n\
             ALTER TYPE order_status RENAME VALUE 'cancelled' TO 'canceled';\n\
             ALTER TABLE orders ALTER COLUMN status SET DEFAULT 'paid';\n\
             ALTER TABLE orders ALTER COLUMN status SET DEFAULT 'pending';\n"
                .to_owned(),
        );
        self.file(
            "sales",
            "order_priority",
            "Orders get a priority. It starts as free text from the import, then becomes an enum.",
            "ALTER TABLE orders ADD COLUMN priority text;\n\
             CREATE TYPE priority_level AS ENUM ('low', 'normal', 'high');\n\
             ALTER TABLE orders ALTER COLUMN priority TYPE priority_level USING priority::priority_level;\n\
             ALTER TABLE orders ADD COLUMN escalations priority_level[] NOT NULL DEFAULT '{}';\n\
             ALTER TYPE priority_level RENAME TO order_priority;\n\
             ALTER TYPE order_priority SET SCHEMA core;\n"
                .to_owned(),
        );
        self.file(
            "sales",
            "shipping_addresses",
            "Addresses as a composite type, and a typed table of them for the address book.",
            "CREATE TYPE postal_address AS (\n    street   text,\n    city     text,\n    postcode varchar(10)\n);\n\
             CREATE TABLE shipping_addresses OF postal_address (\n    PRIMARY KEY (street, city),\n    postcode WITH OPTIONS NOT NULL\n);\n\
             CREATE TABLE address_book (\n    customer_id uuid NOT NULL REFERENCES core.customers (id),\n    address     postal_address NOT NULL,\n    label       text\n);\n"
                .to_owned(),
        );
    }

    fn special_partitions(&mut self) {
        self.file(
            "audit",
            "event_log_source",
            "The event log records its source service. Columns added to the partitioned table \
             reach every partition.",
            "ALTER TABLE event_log ADD COLUMN source text NOT NULL DEFAULT 'unknown';\n\
             ALTER TABLE event_log RENAME COLUMN actor TO actor_name;\n\
             ALTER TABLE event_log ALTER COLUMN source TYPE varchar(40);\n\
             ALTER TABLE event_log ALTER COLUMN actor_name SET NOT NULL;\n"
                .replace(
                    "ALTER TABLE event_log ALTER COLUMN actor_name SET NOT NULL;",
                    "UPDATE event_log SET actor_name = 'system' WHERE actor_name IS NULL;\nALTER TABLE event_log ALTER COLUMN actor_name SET DEFAULT current_user;\nALTER TABLE event_log ALTER COLUMN actor_name SET NOT NULL;",
                ),
        );
        self.file(
            "audit",
            "event_log_archive_q1",
            "Q1 2024 leaves the live log: detached, renamed, kept for the auditors. Q1 2025 is \
             prepared by hand, then attached.",
            "ALTER TABLE event_log DETACH PARTITION event_log_2024_q1;\n\
             ALTER TABLE event_log_2024_q1 RENAME TO event_log_2024_q1_archive;\n\
             CREATE TABLE event_log_2025_q1 (LIKE event_log INCLUDING DEFAULTS);\n\
             ALTER TABLE event_log ATTACH PARTITION event_log_2025_q1 FOR VALUES FROM ('2025-01-01') TO ('2025-04-01');\n"
                .to_owned(),
        );
        self.file(
            "audit",
            "event_log_future_partitions",
            "The partitions for 2030 are created in a loop, as the maintenance job does.",
            "DO $$\nDECLARE\n    q date := '2030-01-01';\nBEGIN\n    WHILE q < '2031-01-01' LOOP\n        EXECUTE format(\n            'CREATE TABLE IF NOT EXISTS %I PARTITION OF event_log FOR VALUES FROM (%L) TO (%L)',\n            'event_log_' || to_char(q, 'YYYY') || '_q' || to_char(q, 'Q'),\n            q,\n            q + interval '3 months'\n        );\n        q := q + interval '3 months';\n    END LOOP;\nEND\n$$;\n"
                .to_owned(),
        );
        self.file(
            "audit",
            "login_attempts",
            "Login attempts, partitioned by outcome. Failed attempts must record the address.",
            "CREATE TABLE login_attempts (\n    id         bigserial,\n    outcome    text NOT NULL,\n    attempted  timestamptz NOT NULL DEFAULT now(),\n    ip         inet,\n    user_agent text\n) PARTITION BY LIST (outcome);\n\
             CREATE TABLE login_attempts_ok PARTITION OF login_attempts FOR VALUES IN ('ok');\n\
             CREATE TABLE login_attempts_failed PARTITION OF login_attempts (ip NOT NULL) FOR VALUES IN ('failed', 'locked');\n\
             CREATE TABLE login_attempts_other PARTITION OF login_attempts DEFAULT;\n\
             ALTER TABLE login_attempts ADD COLUMN country char(2);\n\
             ALTER TABLE login_attempts ALTER COLUMN user_agent TYPE varchar(512);\n"
                .to_owned(),
        );
    }

    fn special_inheritance_and_copies(&mut self) {
        self.file(
            "sales",
            "legacy_orders",
            "Orders imported from the old shop inherit from orders, so that reports see both.",
            "CREATE TABLE legacy_orders (\n    imported_from text NOT NULL,\n    legacy_number integer\n) INHERITS (orders);\n\
             ALTER TABLE orders ADD COLUMN channel text NOT NULL DEFAULT 'web';\n\
             ALTER TABLE orders RENAME COLUMN note TO internal_note;\n\
             ALTER TABLE orders ALTER COLUMN internal_note TYPE varchar(2000);\n"
                .to_owned(),
        );
        self.file(
            "sales",
            "order_copies",
            "Archive and staging copies of orders and lines. LIKE copies NOT NULL always, \
             identity and generated columns only when asked.",
            "CREATE TABLE order_archive (LIKE orders INCLUDING ALL);\n\
             CREATE TABLE order_lines_archive (LIKE order_lines INCLUDING ALL EXCLUDING INDEXES);\n\
             CREATE TABLE order_lines_staging (LIKE order_lines);\n\
             ALTER TABLE order_lines_archive ALTER COLUMN line_total DROP EXPRESSION;\n\
             ALTER TABLE order_lines ALTER COLUMN line_no ADD GENERATED BY DEFAULT AS IDENTITY;\n\
             ALTER TABLE order_lines_staging ALTER COLUMN unit_price DROP NOT NULL;\n"
                .to_owned(),
        );
        self.file(
            "core",
            "product_price_snapshot",
            "A weekly price snapshot for finance; the types follow the source columns and casts.",
            "CREATE TABLE product_price_snapshot AS\nSELECT p.id AS product_id,\n       p.sku,\n       p.price::numeric(12, 2) AS price,\n       c.name AS category,\n       now()::date AS taken_on,\n       p.tags\nFROM products AS p\nJOIN product_categories AS pc ON pc.product_id = p.id\nJOIN categories AS c ON c.id = pc.category_id\nWITH NO DATA;\n\
             CREATE TABLE IF NOT EXISTS product_price_snapshot (id int);\n\
             CREATE TABLE customer_emails AS TABLE customers;\n\
             ALTER TABLE customer_emails DROP COLUMN notes;\n"
                .to_owned(),
        );
        self.file(
            "core",
            "dedupe_customers",
            "One-off data fix: a temporary table named like the real one holds the working copy. \
             Unqualified names resolve to the temporary table first, so the real table is untouched.",
            "CREATE TEMP TABLE customers (LIKE core.customers);\n\
             INSERT INTO customers SELECT * FROM core.customers;\n\
             ALTER TABLE customers ADD COLUMN duplicate_of uuid;\n\
             ALTER TABLE customers DROP COLUMN notes;\n\
             UPDATE core.customers SET notes = 'checked' WHERE id IN (SELECT id FROM customers);\n\
             DROP TABLE customers;\n\
             ALTER TABLE customers ADD COLUMN checked_at timestamptz;\n"
                .to_owned(),
        );
        let customers = self.table_index("core", "customers");
        self.tables[customers]
            .cols
            .push(plain("checked_at", Ty::Timestamptz, false));
        self.file(
            "ops",
            "staff_directory",
            "The staff directory moves here from core, renamed; an UNLOGGED cache of it is rebuilt nightly.",
            "CREATE TABLE core.staff (\n    id serial PRIMARY KEY,\n    login varchar(40) NOT NULL UNIQUE,\n    \"FullName\" text\n);\n\
             ALTER TABLE core.staff SET SCHEMA ops;\n\
             ALTER TABLE IF EXISTS staff RENAME TO staff_members;\n\
             ALTER TABLE IF EXISTS no_such_table ADD COLUMN x int;\n\
             ALTER TABLE staff_members RENAME \"FullName\" TO full_name;\n\
             CREATE UNLOGGED TABLE staff_cache (LIKE staff_members INCLUDING DEFAULTS);\n\
             ALTER TABLE staff_cache SET LOGGED;\n\
             ALTER TABLE staff_cache INHERIT staff_members;\n\
             ALTER TABLE staff_cache NO INHERIT staff_members;\n"
                .to_owned(),
        );
    }

    fn special_functions(&mut self) {
        let coupons = self.tables[self.table_index_any_prefix("coupons")].name.clone();
        let coupons_schema = self.tables[self.table_index_any_prefix("coupons")].schema;
        self.file(
            "sales",
            "order_functions",
            "Totals as SQL-standard functions (bodies parsed at creation), a reporting function \
             returning a table, and a procedure that adds audit columns on demand.",
            format!(
                "CREATE FUNCTION order_total(o bigint) RETURNS numeric\n    LANGUAGE sql\n    STABLE\n    PARALLEL SAFE\nBEGIN ATOMIC\n    SELECT coalesce(sum(line_total), 0) FROM sales.order_lines WHERE order_id = o;\nEND;\n\n\
                 CREATE FUNCTION order_grade(o bigint) RETURNS text\n    LANGUAGE sql\nBEGIN ATOMIC\n    SELECT CASE\n        WHEN sales.order_total(o) > 1000 THEN 'gold'\n        WHEN sales.order_total(o) > 100 THEN 'silver'\n        ELSE 'bronze'\n    END;\nEND;\n\n\
                 CREATE OR REPLACE FUNCTION open_orders(since timestamptz)\n    RETURNS TABLE (order_id bigint, placed timestamptz, lines bigint)\n    LANGUAGE sql STABLE COST 200 ROWS 50\nAS $$\n    SELECT o.id, o.placed_at, count(l.*)\n    FROM sales.orders o LEFT JOIN sales.order_lines l ON l.order_id = o.id\n    WHERE o.placed_at >= since AND o.status = 'pending'\n    GROUP BY o.id, o.placed_at;\n$$;\n\n\
                 ALTER FUNCTION order_total(bigint) COST 50;\n\
                 ALTER FUNCTION open_orders(timestamptz) RENAME TO pending_orders;\n\
                 ALTER FUNCTION pending_orders(timestamptz) SET work_mem = '64MB';\n\n\
                 CREATE PROCEDURE add_audit_columns(tbl text)\n    LANGUAGE plpgsql\nAS $$\nBEGIN\n    EXECUTE format('ALTER TABLE {coupons_schema}.%I ADD COLUMN IF NOT EXISTS audited_at timestamptz', tbl);\nEND;\n$$;\n\
                 CALL add_audit_columns('{coupons}');\n"
            ),
        );
        let i = self.table_index_any_prefix("coupons");
        for t in self.family_of(i) {
            self.tables[t]
                .cols
                .push(plain("audited_at", Ty::Timestamptz, false));
        }
        self.file(
            "sales",
            "order_triggers",
            "Order changes are written to the audit log by a trigger; the trigger is renamed to the \
             team's convention and an old one is dropped.",
            "CREATE FUNCTION log_order_change() RETURNS trigger\n    LANGUAGE plpgsql\n    SECURITY DEFINER\nAS $body$\nDECLARE\n    detail jsonb;\nBEGIN\n    detail := jsonb_build_object('id', NEW.id, 'status', NEW.status, 'op', TG_OP);\n    INSERT INTO audit.event_log (occurred_at, kind, actor_name, payload)\n    VALUES ('2024-06-01', 'order.' || lower(TG_OP), current_user, detail);\n    RETURN NEW;\nEND;\n$body$;\n\n\
             CREATE TRIGGER orders_log AFTER INSERT OR UPDATE ON orders\n    FOR EACH ROW EXECUTE FUNCTION log_order_change();\n\
             ALTER TRIGGER orders_log ON orders RENAME TO orders_audit_trg;\n\
             CREATE OR REPLACE TRIGGER orders_audit_trg AFTER INSERT OR UPDATE OF status ON orders\n    FOR EACH ROW EXECUTE FUNCTION log_order_change();\n\
             DROP TRIGGER IF EXISTS orders_legacy_trg ON orders;\n\
             CREATE SEQUENCE invoice_numbers START 1000;\n\
             ALTER SEQUENCE invoice_numbers RENAME TO invoice_no_seq;\n\
             ALTER SEQUENCE invoice_no_seq INCREMENT BY 10 RESTART WITH 5000;\n\
             CREATE RULE orders_no_delete AS ON DELETE TO order_archive DO INSTEAD NOTHING;\n"
                .to_owned(),
        );
    }

    fn table_index_any_prefix(&self, prefix: &str) -> usize {
        self.tables
            .iter()
            .position(|t| t.alive && t.name.starts_with(prefix) && !t.name.contains("snapshot") && !t.name.contains("archive") && !t.name.contains("notes"))
            .unwrap_or_else(|| panic!("generator: no table {prefix}*"))
    }

    fn special_blocks(&mut self) {
        let ops_tables: Vec<usize> = (0..self.tables.len())
            .filter(|&i| self.tables[i].alive && self.tables[i].schema == "ops")
            .collect();
        self.file(
            "ops",
            "tenant_everywhere",
            "Multi-tenancy: every ordinary table of the schema gets a tenant_id, in one loop over \
             the catalog (new tables declare it themselves).",
            "DO $$\nDECLARE\n    r record;\nBEGIN\n    FOR r IN\n        SELECT c.relname\n        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace\n        WHERE n.nspname = 'ops' AND c.relkind = 'r'\n    LOOP\n        EXECUTE format('ALTER TABLE ops.%I ADD COLUMN IF NOT EXISTS tenant_id integer', r.relname);\n    END LOOP;\nEND\n$$;\n"
                .to_owned(),
        );
        for i in ops_tables {
            if self.tables[i].col("tenant_id").is_none() {
                self.tables[i].cols.push(plain("tenant_id", Ty::Int, false));
            }
        }
        self.file(
            "sales",
            "gift_cards",
            "Gift cards, created only if a hotfix has not created them already (it did on two \
             environments).",
            "DO $$\nBEGIN\n    IF NOT EXISTS (SELECT FROM pg_tables WHERE schemaname = 'sales' AND tablename = 'gift_cards') THEN\n        CREATE TABLE gift_cards (\n            code     varchar(16) PRIMARY KEY,\n            balance  numeric(10, 2) NOT NULL DEFAULT 0,\n            issued   date NOT NULL DEFAULT current_date\n        );\n    END IF;\nEND\n$$;\n\
             DO $$\nBEGIN\n    ALTER TABLE gift_cards ADD COLUMN expires date;\nEXCEPTION\n    WHEN duplicate_column THEN RAISE NOTICE 'expires already there';\nEND\n$$;\n\
             DO LANGUAGE plpgsql $$\nBEGIN\n    RAISE NOTICE 'gift cards: % rows', (SELECT count(*) FROM sales.gift_cards);\n    PERFORM pg_notify('migrations', 'gift_cards');\nEND\n$$;\n"
                .to_owned(),
        );
        self.file(
            "core",
            "backfill_regions",
            "Backfills the region of old customers in batches; only data changes here.",
            "DO $backfill$\nDECLARE\n    batch integer := 0;\n    touched integer;\nBEGIN\n    LOOP\n        UPDATE customers SET \"Region\" = 'EU'\n        WHERE id IN (SELECT id FROM customers WHERE \"Region\" IS NULL LIMIT 500);\n        GET DIAGNOSTICS touched = ROW_COUNT;\n        EXIT WHEN touched = 0;\n        batch := batch + 1;\n        RAISE NOTICE 'batch % done', batch;\n    END LOOP;\n    INSERT INTO audit.event_log (occurred_at, kind, payload)\n    SELECT '2024-06-01', 'backfill', jsonb_build_object('batches', batch);\nEND\n$backfill$;\n"
                .to_owned(),
        );
    }

    fn special_search_path(&mut self) {
        self.file(
            "sales",
            "referrals",
            "Referral codes live on the customer (core); the file works with core on its path.",
            "SET search_path TO sales, core, public;\n\
             ALTER TABLE customers ADD COLUMN referral_code varchar(16);\n\
             CREATE TABLE referral_rewards (\n    id bigserial PRIMARY KEY,\n    customer_id uuid NOT NULL REFERENCES customers (id),\n    nickname citext,\n    tier plan_tier NOT NULL DEFAULT 'pro'\n);\n\
             RESET search_path;\n"
                .to_owned(),
        );
        self.file(
            "sales",
            "reporting_schema",
            "A schema of its own for reporting tables; created from the sales migrations because \
             sales owns them.",
            "CREATE SCHEMA IF NOT EXISTS reporting;\n\
             CREATE TABLE reporting.daily_totals (\n    day date PRIMARY KEY,\n    orders integer NOT NULL,\n    revenue numeric(14, 2) NOT NULL\n);\n\
             SET search_path = reporting;\n\
             CREATE TABLE weekly_totals (week date PRIMARY KEY, revenue numeric(14, 2));\n\
             ALTER TABLE daily_totals ADD COLUMN refunds numeric(14, 2);\n"
                .to_owned(),
        );
    }

    fn special_odd_syntax(&mut self) {
        self.file(
            "core",
            "legacy_import",
            "Tables from the legacy import keep their quoted, mixed-case names.",
            "CREATE TABLE \"LegacyImport\" (\n    \"RowId\" integer PRIMARY KEY,\n    \"Payload\" text,\n    \"loaded\" boolean DEFAULT false,\n    sep text NOT NULL DEFAULT E'\\t',\n    note text DEFAULT 'it''s; fine'\n);\n\
             ALTER TABLE \"LegacyImport\" RENAME COLUMN \"Payload\" TO payload;\n\
             COMMENT ON TABLE \"LegacyImport\" IS $c$Rows from the 2019 import; don't edit; see JIRA-12$c$;\n\
             /* The next statement is harmless: statistics only. */\n\
             ALTER TABLE \"LegacyImport\" ALTER COLUMN payload SET STATISTICS 1000;\n\
             CREATE TABLE IF NOT EXISTS \"LegacyImport\" (\"RowId\" bigint);\n\
             DROP TABLE IF EXISTS \"legacyimport\";\n"
                .to_owned(),
        );
        self.file(
            "ops",
            "route_stops",
            "Route stops; the ordering constraint is checked at commit, not per row.",
            "CREATE TABLE route_codes (code varchar(20) PRIMARY KEY);\n\
             CREATE TABLE route_stops (\n    route_code varchar(20) NOT NULL,\n    seq        smallint NOT NULL,\n    arrives    time,\n    departs    time with time zone,\n    dwell      interval minute,\n    coords     point,\n    CONSTRAINT route_stops_pk PRIMARY KEY (route_code, seq),\n    CONSTRAINT route_stops_route_fk FOREIGN KEY (route_code) REFERENCES route_codes (code)\n);\n\
             ALTER TABLE route_stops ALTER CONSTRAINT route_stops_route_fk DEFERRABLE INITIALLY DEFERRED;\n\
             ALTER TABLE route_stops ADD COLUMN notes text COLLATE \"C\";\n\
             ALTER TABLE route_stops ALTER COLUMN notes SET DATA TYPE varchar(500) COLLATE \"C\";\n\
             CREATE INDEX route_stops_notes_trgm ON route_stops USING btree (lower(notes) text_pattern_ops);\n\
             CLUSTER route_stops USING route_stops_pk;\n"
                .to_owned(),
        );
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
