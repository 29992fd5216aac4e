// The corpus's story: included by `corpus.rs` (one generator, two files to keep each
// readable). Foundation files by hand, then modules that grow by random (seeded) steps,
// then the special cases by hand.

/// How a table's key is declared.
#[derive(Clone, Copy)]
enum IdStyle {
    BigSerial,
    IdentityAlways,
    IdentityByDefault,
    Uuid,
    Serial,
    TableLevel,
}

const ID_STYLES: [IdStyle; 6] = [
    IdStyle::BigSerial,
    IdStyle::IdentityAlways,
    IdStyle::IdentityByDefault,
    IdStyle::Uuid,
    IdStyle::Serial,
    IdStyle::TableLevel,
];

/// One table that grows over the module's migrations.
struct Module {
    schema: &'static str,
    table: String,
    /// Its notes table and reporting view (names fixed at creation).
    notes: String,
    view: String,
    /// Its status enum, if it has one.
    status: Option<String>,
    step: u32,
    steps: u32,
}

const MODULES: &[(&str, &str)] = &[
    ("audit", "webhook_deliveries"),
    ("audit", "api_keys"),
    ("audit", "retention_rules"),
    ("core", "brands"),
    ("core", "media_assets"),
    ("core", "price_lists"),
    ("core", "loyalty_members"),
    ("core", "suppliers"),
    ("ops", "warehouses"),
    ("ops", "carriers"),
    ("ops", "staff_shifts"),
    ("ops", "tickets"),
    ("ops", "inspections"),
    ("ops", "routes"),
    ("sales", "invoices"),
    ("sales", "payments"),
    ("sales", "coupons"),
    ("sales", "quotes"),
    ("sales", "subscriptions"),
    ("sales", "refunds"),
];

const STATUS_LABELS: &[&[&str]] = &[
    &["draft", "active", "paused", "closed"],
    &["pending", "sent", "failed"],
    &["new", "in_review", "approved", "rejected"],
    &["open", "on_hold", "resolved"],
];

impl Gen {
    /// The reference to `table` from a file of `schema`: unqualified at home.
    fn name_in(&self, schema: &str, table: &Table) -> String {
        if table.schema == schema && self.rng_peek_qualify(&table.name) {
            q(&table.name)
        } else {
            format!("{}.{}", table.schema, q(&table.name))
        }
    }

    /// Whether to leave a home table unqualified (most migrations do); deterministic per name.
    fn rng_peek_qualify(&self, name: &str) -> bool {
        !name.len().is_multiple_of(5)
    }

    fn random_ty(&mut self, schema: &'static str) -> Ty {
        let roll = self.rng.below(100);
        match roll {
            0..=11 => Ty::Text,
            12..=21 => Ty::Varchar(*self.rng.pick(&[40, 80, 120, 255])),
            22..=30 => Ty::Int,
            31..=35 => Ty::BigInt,
            36..=38 => Ty::SmallInt,
            39..=46 => Ty::Numeric(*self.rng.pick(&[10, 12, 14]), *self.rng.pick(&[2, 2, 4, 0])),
            47..=53 => Ty::Bool,
            54..=60 => Ty::Timestamptz,
            61..=63 => Ty::Timestamp,
            64..=67 => Ty::Date,
            68..=72 => Ty::Jsonb,
            73 => Ty::Json,
            74..=77 => Ty::Uuid,
            78..=80 => Ty::TextArray,
            81 => Ty::IntArray,
            82 => Ty::Interval,
            83 => Ty::Inet,
            84 => Ty::Bytea,
            85 => Ty::Char(3),
            86 => Ty::Time,
            87 => Ty::Real,
            88 => Ty::Double,
            89..=91 => Ty::Citext,
            _ => {
                let mine: Vec<(String, String)> = self
                    .enums
                    .iter()
                    .filter(|e| e.schema == schema)
                    .map(|e| (e.name.clone(), e.labels[0].clone()))
                    .collect();
                if mine.is_empty() {
                    Ty::Text
                } else {
                    let (name, label) = mine[self.rng.below(mine.len())].clone();
                    if self.rng.chance(25) {
                        Ty::UserArray(name, label)
                    } else {
                        Ty::User(name, label)
                    }
                }
            }
        }
    }

    fn random_col(&mut self, schema: &'static str, table: &Table) -> Col {
        let ty = self.random_ty(schema);
        let base = *self.rng.pick(column_pool(&ty));
        Col {
            name: table.fresh_name(base),
            ty,
            not_null: self.rng.chance(35),
            pinned: false,
        }
    }

    /// A column definition (`name type [NOT NULL DEFAULT v]`).
    fn col_def(&mut self, col: &Col) -> String {
        let ty = col.ty.sql(&mut self.rng);
        if col.not_null {
            let value = col.ty.literal(&mut self.rng);
            format!("{} {ty} NOT NULL DEFAULT {value}", q(&col.name))
        } else if self.rng.chance(15) {
            let value = col.ty.literal(&mut self.rng);
            format!("{} {ty} DEFAULT {value}", q(&col.name))
        } else {
            format!("{} {ty}", q(&col.name))
        }
    }

    fn id_def(&mut self, style: IdStyle) -> (String, Col) {
        let (def, ty) = match style {
            IdStyle::BigSerial => ("id BIGSERIAL PRIMARY KEY".to_owned(), Ty::BigInt),
            IdStyle::IdentityAlways => (
                "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY".to_owned(),
                Ty::BigInt,
            ),
            IdStyle::IdentityByDefault => (
                "id INTEGER GENERATED BY DEFAULT AS IDENTITY (START WITH 1000 INCREMENT BY 1) PRIMARY KEY"
                    .to_owned(),
                Ty::Int,
            ),
            IdStyle::Uuid => (
                "id uuid PRIMARY KEY DEFAULT gen_random_uuid()".to_owned(),
                Ty::Uuid,
            ),
            IdStyle::Serial => ("id serial PRIMARY KEY".to_owned(), Ty::Int),
            IdStyle::TableLevel => (
                "id int8 GENERATED BY DEFAULT AS IDENTITY".to_owned(),
                Ty::BigInt,
            ),
        };
        (
            def,
            Col {
                name: "id".to_owned(),
                ty,
                not_null: true,
                pinned: true,
            },
        )
    }

    /// `INSERT` of `rows` rows into `table` (model columns that have no default get values).
    fn seed(&mut self, schema: &str, table: &Table, rows: usize) -> String {
        let cols: Vec<Col> = table
            .cols
            .iter()
            .filter(|c| c.name != "id" && (c.not_null || self.rng.chance(60)))
            .cloned()
            .collect();
        if cols.is_empty() {
            return String::new();
        }
        let names = cols.iter().map(|c| q(&c.name)).collect::<Vec<_>>().join(", ");
        let mut values = Vec::new();
        for _ in 0..rows {
            let row = cols
                .iter()
                .map(|c| c.ty.literal(&mut self.rng))
                .collect::<Vec<_>>()
                .join(", ");
            values.push(format!("    ({row})"));
        }
        format!(
            "INSERT INTO {} ({names}) VALUES\n{};\n",
            self.name_in(schema, table),
            values.join(",\n")
        )
    }

    fn foundation(&mut self) {
        self.file(
            "audit",
            "extensions_and_event_log",
            "Extensions every schema uses live in public. The event log is partitioned by month; \
             the partitions for the first year are created here, later ones by the maintenance job.",
            r#"CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public;
CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;
CREATE EXTENSION IF NOT EXISTS hstore WITH SCHEMA public;

CREATE TABLE event_log (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL,
    actor       text,
    payload     jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);

CREATE TABLE event_log_2024_q1 PARTITION OF event_log FOR VALUES FROM ('2024-01-01') TO ('2024-04-01');
CREATE TABLE event_log_2024_q2 PARTITION OF event_log FOR VALUES FROM ('2024-04-01') TO ('2024-07-01');
CREATE TABLE event_log_2024_q3 PARTITION OF event_log FOR VALUES FROM ('2024-07-01') TO ('2024-10-01');
CREATE TABLE event_log_2024_q4 PARTITION OF event_log FOR VALUES FROM ('2024-10-01') TO ('2025-01-01');
CREATE TABLE event_log_default PARTITION OF event_log DEFAULT;

CREATE INDEX event_log_kind_idx ON event_log (kind, occurred_at DESC);
COMMENT ON TABLE event_log IS 'Append-only log of domain events; partitions are dropped after 3 years.';
"#
            .to_owned(),
        );
        for name in [
            "event_log",
            "event_log_2024_q1",
            "event_log_2024_q2",
            "event_log_2024_q3",
            "event_log_2024_q4",
            "event_log_default",
        ] {
            self.tables.push(Table {
                schema: "audit",
                name: name.to_owned(),
                cols: vec![
                    pinned("id", Ty::BigInt, true),
                    pinned("occurred_at", Ty::Timestamptz, true),
                    plain("kind", Ty::Text, true),
                    plain("actor", Ty::Text, false),
                    plain("payload", Ty::Jsonb, true),
                ],
                family: name == "event_log",
                member: name != "event_log",
                alive: true,
            });
        }

        let mut core = String::new();
        core.push_str(
            "CREATE DOMAIN email_address AS public.citext\n    CHECK (VALUE ~ '^[^@\\s]+@[^@\\s]+$');\n",
        );
        core.push_str(
            "CREATE DOMAIN money_amount AS numeric(12, 2) CHECK (VALUE >= 0) DEFAULT 0;\n",
        );
        core.push_str(&self.new_enum("core", "customer_tier", &["free", "pro", "enterprise"]));
        core.push_str(
            r#"
CREATE TABLE customers (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email        email_address NOT NULL UNIQUE,
    display_name varchar(120) NOT NULL,
    tier         customer_tier NOT NULL DEFAULT 'free',
    past_tiers   customer_tier[] NOT NULL DEFAULT '{}',
    "legacyId"   integer,
    "Region"     char(2),
    notes        text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products (
    id          bigserial PRIMARY KEY,
    sku         varchar(32) NOT NULL UNIQUE,
    name        varchar(200) NOT NULL,
    price       money_amount NOT NULL,
    tags        text[] NOT NULL DEFAULT '{}',
    attributes  jsonb,
    weight_g    integer CHECK (weight_g > 0),
    created_at  timestamp with time zone NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE categories (
    id        serial PRIMARY KEY,
    parent_id integer REFERENCES categories (id) ON DELETE SET NULL,
    name      text NOT NULL,
    position  smallint NOT NULL DEFAULT 0
);

CREATE TABLE product_categories (
    product_id  bigint NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    category_id integer NOT NULL REFERENCES categories (id),
    PRIMARY KEY (product_id, category_id)
);

INSERT INTO customers (email, display_name, tier) VALUES
    ('ann@example.com', 'Ann', 'pro'),
    ('bob@example.com', 'Bob', 'free'),
    ('cy@example.com', 'Cy', 'enterprise');
INSERT INTO categories (name) VALUES ('books'), ('garden'), ('tools');
"#,
        );
        self.file(
            "core",
            "customers_and_products",
            "Customers, products and categories. Emails are case-insensitive (citext domain); \
             money amounts are a checked numeric domain.",
            core,
        );
        self.tables.push(Table {
            schema: "core",
            name: "customers".to_owned(),
            cols: vec![
                pinned("id", Ty::Uuid, true),
                pinned("email", Ty::User("email_address".into(), "x@y.z".into()), true),
                pinned("display_name", Ty::Varchar(120), true),
                pinned("tier", Ty::User("customer_tier".into(), "pro".into()), true),
                pinned("past_tiers", Ty::UserArray("customer_tier".into(), "pro".into()), true),
                pinned("legacyId", Ty::Int, false),
                pinned("Region", Ty::Char(2), false),
                plain("notes", Ty::Text, false),
                pinned("created_at", Ty::Timestamptz, true),
            ],
            family: false,
            member: false,
            alive: true,
        });
        self.tables.push(Table {
            schema: "core",
            name: "products".to_owned(),
            cols: vec![
                pinned("id", Ty::BigInt, true),
                pinned("sku", Ty::Varchar(32), true),
                pinned("name", Ty::Varchar(200), true),
                pinned("price", Ty::User("money_amount".into(), "5".into()), true),
                pinned("tags", Ty::TextArray, true),
                plain("attributes", Ty::Jsonb, false),
                pinned("weight_g", Ty::Int, false),
                pinned("created_at", Ty::Timestamptz, true),
            ],
            family: false,
            member: false,
            alive: true,
        });
        for (name, cols) in [
            (
                "categories",
                vec![
                    pinned("id", Ty::Int, true),
                    pinned("parent_id", Ty::Int, false),
                    pinned("name", Ty::Text, true),
                    plain("position", Ty::SmallInt, true),
                ],
            ),
            (
                "product_categories",
                vec![
                    pinned("product_id", Ty::BigInt, true),
                    pinned("category_id", Ty::Int, true),
                ],
            ),
        ] {
            self.tables.push(Table {
                schema: "core",
                name: name.to_owned(),
                cols,
                family: false,
                member: false,
                alive: true,
            });
        }

        let mut ops = String::new();
        ops.push_str(&self.new_enum("ops", "shipment_status", &["queued", "picked", "shipped", "delivered"]));
        ops.push_str(
            r#"
CREATE TABLE shipments (
    id            bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    customer_id   uuid NOT NULL REFERENCES core.customers (id),
    status        shipment_status NOT NULL DEFAULT 'queued',
    tracking_code varchar(40),
    weight_kg     numeric(8, 3),
    shipped_at    timestamptz,
    CONSTRAINT shipments_tracking_unique UNIQUE (tracking_code)
);

CREATE TABLE shipment_items (
    shipment_id bigint NOT NULL REFERENCES shipments (id) ON DELETE CASCADE,
    product_id  bigint NOT NULL REFERENCES core.products (id),
    quantity    integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (shipment_id, product_id)
);
"#,
        );
        self.file(
            "ops",
            "shipments",
            "Shipments and their items; status follows the warehouse scanner's states.",
            ops,
        );
        self.tables.push(Table {
            schema: "ops",
            name: "shipments".to_owned(),
            cols: vec![
                pinned("id", Ty::BigInt, true),
                pinned("customer_id", Ty::Uuid, true),
                pinned("status", Ty::User("shipment_status".into(), "queued".into()), true),
                pinned("tracking_code", Ty::Varchar(40), false),
                plain("weight_kg", Ty::Numeric(8, 3), false),
                plain("shipped_at", Ty::Timestamptz, false),
            ],
            family: false,
            member: false,
            alive: true,
        });
        self.tables.push(Table {
            schema: "ops",
            name: "shipment_items".to_owned(),
            cols: vec![
                pinned("shipment_id", Ty::BigInt, true),
                pinned("product_id", Ty::BigInt, true),
                pinned("quantity", Ty::Int, true),
            ],
            family: false,
            member: false,
            alive: true,
        });

        let mut sales = String::new();
        sales.push_str(&self.new_enum(
            "sales",
            "order_status",
            &["pending", "paid", "shipped", "cancelled"],
        ));
        sales.push_str(
            r#"
CREATE TABLE orders (
    id          bigserial PRIMARY KEY,
    customer_id uuid NOT NULL REFERENCES core.customers (id),
    status      order_status NOT NULL DEFAULT 'pending',
    currency    char(3) NOT NULL DEFAULT 'EUR',
    placed_at   timestamptz NOT NULL DEFAULT now(),
    note        text
);

CREATE TABLE order_lines (
    order_id    bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no     smallint NOT NULL,
    product_id  bigint NOT NULL REFERENCES core.products (id),
    quantity    integer NOT NULL,
    unit_price  numeric(12, 2) NOT NULL,
    line_total  numeric(14, 2) GENERATED ALWAYS AS (quantity * unit_price) STORED,
    PRIMARY KEY (order_id, line_no)
);

CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE UNIQUE INDEX order_lines_product_idx ON order_lines (order_id, product_id) WHERE quantity > 0;
"#,
        );
        self.file(
            "sales",
            "orders",
            "Orders and order lines. The line total is computed by the database so that reports \
             and invoices agree to the cent.",
            sales,
        );
        self.tables.push(Table {
            schema: "sales",
            name: "orders".to_owned(),
            cols: vec![
                pinned("id", Ty::BigInt, true),
                pinned("customer_id", Ty::Uuid, true),
                pinned("status", Ty::User("order_status".into(), "pending".into()), true),
                pinned("currency", Ty::Char(3), true),
                pinned("placed_at", Ty::Timestamptz, true),
                plain("note", Ty::Text, false),
            ],
            family: false,
            member: false,
            alive: true,
        });
        self.tables.push(Table {
            schema: "sales",
            name: "order_lines".to_owned(),
            cols: vec![
                pinned("order_id", Ty::BigInt, true),
                pinned("line_no", Ty::SmallInt, true),
                pinned("product_id", Ty::BigInt, true),
                pinned("quantity", Ty::Int, true),
                pinned("unit_price", Ty::Numeric(12, 2), true),
                pinned("line_total", Ty::Numeric(14, 2), false),
            ],
            family: false,
            member: false,
            alive: true,
        });
        for schema in SCHEMAS {
            self.touch_function(schema);
        }
    }

    /// The `updated_at` trigger function of `schema` (plpgsql, the usual shape).
    fn touch_function(&mut self, schema: &'static str) {
        self.touch.insert(schema, true);
        self.file(
            schema,
            "touch_trigger_function",
            "Keeps updated_at current on every UPDATE. Tables opt in with a BEFORE UPDATE trigger.",
            r#"CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    COST 1
AS $$
BEGIN
    -- Set by the database so that every writer (application, scripts, psql) agrees.
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

COMMENT ON FUNCTION touch_updated_at() IS 'BEFORE UPDATE trigger: sets updated_at to now().';
ALTER FUNCTION touch_updated_at() SET search_path = pg_catalog;
"#
            .to_owned(),
        );
    }

    fn modules(&mut self) {
        let mut modules: Vec<Module> = MODULES
            .iter()
            .map(|&(schema, table)| Module {
                schema,
                table: table.to_owned(),
                notes: format!("{}_notes", singular(table)),
                view: format!("{}_overview", singular(table)),
                status: None,
                step: 0,
                steps: 0,
            })
            .collect();
        for module in &mut modules {
            module.steps = 15 + (module.table.len() as u32 % 4);
        }
        let rounds = modules.iter().map(|m| m.steps).max().unwrap_or(0);
        for round in 0..rounds {
            for module in &mut modules {
                if module.step < module.steps {
                    self.module_step(module, round);
                    module.step += 1;
                }
            }
        }
    }

    fn module_step(&mut self, module: &mut Module, _round: u32) {
        match module.step {
            0 => self.module_create(module),
            1 => self.module_detail_table(module),
            2 => self.module_view(module),
            3 => self.module_trigger(module),
            4 => self.module_function(module),
            7 => self.module_report(module),
            _ => self.module_evolve(module),
        }
    }

    fn module_create(&mut self, module: &mut Module) {
        let schema = module.schema;
        let mut body = String::new();
        if self.rng.chance(70) {
            let labels = *self.rng.pick(STATUS_LABELS);
            let name = format!("{}_state", singular(&module.table));
            body.push_str(&self.new_enum(schema, &name, labels));
            module.status = Some(name);
        }
        let style = *self.rng.pick(&ID_STYLES);
        let (id_def, id_col) = self.id_def(style);
        let mut table = Table {
            schema,
            name: module.table.clone(),
            cols: vec![id_col],
            family: false,
            member: false,
            alive: true,
        };
        let mut defs = vec![id_def];
        if let Some(status) = &module.status {
            let labels = self.enums.last().expect("just made").labels.clone();
            defs.push(format!("status {status} NOT NULL DEFAULT '{}'", labels[0]));
            table.cols.push(Col {
                name: "status".to_owned(),
                ty: Ty::User(status.clone(), labels[0].clone()),
                not_null: true,
                pinned: false,
            });
        }
        for _ in 0..(4 + self.rng.below(6)) {
            let col = self.random_col(schema, &table);
            defs.push(self.col_def(&col));
            table.cols.push(col);
        }
        if self.rng.chance(30) {
            let name = table.fresh_name("ExternalRef");
            defs.push(format!("{} varchar(64)", q(&name)));
            table.cols.push(plain(&name, Ty::Varchar(64), false));
        }
        defs.push("created_at timestamptz NOT NULL DEFAULT now()".to_owned());
        table.cols.push(pinned("created_at", Ty::Timestamptz, true));
        if let IdStyle::TableLevel = style {
            defs.push(format!("CONSTRAINT {}_pkey PRIMARY KEY (id)", module.table));
        }
        let _ = writeln!(
            body,
            "\nCREATE TABLE {} (\n    {}\n);",
            q(&table.name),
            defs.join(",\n    ")
        );
        let _ = writeln!(
            body,
            "CREATE INDEX {}_created_idx ON {} (created_at);",
            table.name,
            q(&table.name)
        );
        let _ = writeln!(
            body,
            "COMMENT ON TABLE {} IS 'Owned by the {} team; see the service README for its lifecycle.';",
            q(&table.name),
            schema
        );
        let rows = 3 + self.rng.below(6);
        body.push_str(&self.seed(schema, &table, rows));
        self.tables.push(table);
        let purpose = format!(
            "Creates {} with its first columns and a few rows the application expects to exist.",
            module.table
        );
        self.file(schema, &format!("create_{}", module.table), &purpose, body);
    }

    fn module_detail_table(&mut self, module: &mut Module) {
        let schema = module.schema;
        let parent = self.table(schema, &module.table);
        let parent_id = parent.col("id").expect("id").ty.clone();
        let parent_ref = format!("{}.{}", parent.schema, q(&parent.name));
        let name = module.notes.clone();
        let parent_ty = match parent_id {
            Ty::Uuid => "uuid",
            Ty::Int => "integer",
            _ => "bigint",
        };
        let body = format!(
            "CREATE TABLE {name} (\n    id bigserial PRIMARY KEY,\n    parent_id {parent_ty} NOT NULL REFERENCES {parent_ref} (id) ON DELETE CASCADE,\n    author text NOT NULL,\n    body text NOT NULL CHECK (length(body) < 10000),\n    pinned_at timestamptz,\n    created_at timestamptz NOT NULL DEFAULT now()\n);\nCREATE INDEX {name}_parent_idx ON {name} (parent_id, created_at DESC);\nGRANT SELECT ON {name} TO PUBLIC;\n"
        );
        self.tables.push(Table {
            schema,
            name: name.clone(),
            cols: vec![
                pinned("id", Ty::BigInt, true),
                pinned("parent_id", parent_id, true),
                pinned("author", Ty::Text, true),
                pinned("body", Ty::Text, true),
                pinned("pinned_at", Ty::Timestamptz, false),
                pinned("created_at", Ty::Timestamptz, true),
            ],
            family: false,
            member: false,
            alive: true,
        });
        self.file(
            schema,
            &format!("create_{name}"),
            "Free-text notes attached by support staff; deleted with their parent.",
            body,
        );
    }

    /// A reporting view over the module's table and its notes: long, as such views are.
    fn module_view(&mut self, module: &mut Module) {
        let schema = module.schema;
        let t = self.table_index(schema, &module.table);
        let notes = module.notes.clone();
        let cols: Vec<String> = self.tables[t]
            .cols
            .iter()
            .filter(|c| !matches!(c.ty, Ty::Bytea | Ty::Json))
            .map(|c| c.name.clone())
            .collect();
        for col in &mut self.tables[t].cols {
            if cols.contains(&col.name) {
                col.pinned = true;
            }
        }
        let table_ref = self.name_in(schema, &self.tables[t]);
        let mut select = String::new();
        for col in &cols {
            let _ = writeln!(select, "    t.{},", q(col));
        }
        let view = module.view.clone();
        let body = format!(
            "CREATE OR REPLACE VIEW {view} AS\nSELECT\n{select}    count(n.id) AS note_count,\n    max(n.created_at) AS last_note_at,\n    bool_or(n.pinned_at IS NOT NULL) AS has_pinned_note,\n    string_agg(DISTINCT n.author, ', ' ORDER BY n.author) AS authors,\n    CASE\n        WHEN count(n.id) = 0 THEN 'quiet'\n        WHEN count(n.id) < 5 THEN 'normal'\n        ELSE 'busy'\n    END AS activity,\n    coalesce(extract(epoch FROM (now() - max(n.created_at))) / 3600, -1) AS hours_since_note\nFROM {table_ref} AS t\nLEFT JOIN {notes} AS n ON n.parent_id = t.id\n    AND n.created_at > now() - interval '365 days'\n    AND length(n.body) > 0\nGROUP BY {}\nHAVING count(n.id) >= 0\nORDER BY t.id;\n\nCOMMENT ON VIEW {view} IS 'One row per {}: note activity for the support dashboard.';\nGRANT SELECT ON {view} TO PUBLIC;\n",
            cols.iter().map(|c| format!("t.{}", q(c))).collect::<Vec<_>>().join(", "),
            singular(&module.table),
        );
        self.file(
            schema,
            &format!("create_{view}"),
            "Reporting view for the support dashboard. Columns of the table it shows cannot be \
             dropped or retyped without recreating it.",
            body,
        );
    }

    fn module_trigger(&mut self, module: &mut Module) {
        let schema = module.schema;
        let t = self.table_index(schema, &module.table);
        let table_ref = self.name_in(schema, &self.tables[t]);
        self.tables[t]
            .cols
            .push(pinned("updated_at", Ty::Timestamptz, true));
        let name = &module.table;
        let body = format!(
            "ALTER TABLE {table_ref} ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();\n\nCREATE TRIGGER {name}_touch\n    BEFORE UPDATE ON {table_ref}\n    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();\n"
        );
        self.file(
            schema,
            &format!("{name}_updated_at"),
            "Adds updated_at, maintained by the shared trigger function.",
            body,
        );
    }

    /// A plpgsql function of the module's business rules: long bodies are common.
    fn module_function(&mut self, module: &mut Module) {
        let schema = module.schema;
        let t = self.table_index_any(&module.table);
        let table_ref = format!("{}.{}", self.tables[t].schema, q(&self.tables[t].name));
        let notes_ref = format!("{schema}.{}", module.notes);
        let entity = singular(&module.table);
        let body = format!(
            "CREATE OR REPLACE FUNCTION {entity}_summary(p_id {id_ty}, p_limit integer DEFAULT 10)\n    RETURNS jsonb\n    LANGUAGE plpgsql\n    STABLE\n    SECURITY INVOKER\n    COST 100\nAS $function$\nDECLARE\n    v_row      record;\n    v_notes    jsonb := '[]'::jsonb;\n    v_count    integer := 0;\n    v_authors  text[] := ARRAY[]::text[];\n    v_result   jsonb;\nBEGIN\n    -- The row itself, as JSON; NULL when it does not exist (callers treat that as 404).\n    SELECT * INTO v_row FROM {table_ref} WHERE id = p_id;\n    IF NOT FOUND THEN\n        RETURN NULL;\n    END IF;\n\n    -- The latest notes, newest first, at most p_limit of them.\n    FOR v_row IN\n        SELECT n.id, n.author, n.body, n.created_at\n        FROM {notes_ref} AS n\n        WHERE n.parent_id = p_id\n        ORDER BY n.created_at DESC, n.id DESC\n        LIMIT p_limit\n    LOOP\n        v_count := v_count + 1;\n        v_notes := v_notes || jsonb_build_object(\n            'id', v_row.id,\n            'author', v_row.author,\n            'excerpt', left(v_row.body, 140),\n            'at', to_char(v_row.created_at, 'YYYY-MM-DD\"T\"HH24:MI:SS')\n        );\n        IF NOT v_row.author = ANY (v_authors) THEN\n            v_authors := array_append(v_authors, v_row.author);\n        END IF;\n    END LOOP;\n\n    v_result := jsonb_build_object(\n        'id', p_id,\n        'notes', v_notes,\n        'note_count', v_count,\n        'authors', to_jsonb(v_authors),\n        'generated_at', now()\n    );\n    RETURN v_result;\nEXCEPTION\n    WHEN undefined_column THEN\n        RAISE WARNING '{entity}_summary: schema changed under us: %', SQLERRM;\n        RETURN NULL;\nEND;\n$function$;\n\nCOMMENT ON FUNCTION {entity}_summary({id_ty}, integer) IS 'JSON summary of one {entity} for the support tool.';\nGRANT EXECUTE ON FUNCTION {entity}_summary({id_ty}, integer) TO PUBLIC;\n",
            id_ty = match self.tables[t].col("id").map(|c| &c.ty) {
                Some(Ty::Uuid) => "uuid",
                Some(Ty::Int) => "integer",
                _ => "bigint",
            },
        );
        self.file(
            schema,
            &format!("{entity}_summary_function"),
            "The support tool's summary of one row and its latest notes, computed in the \
             database so that the tool needs one round trip. Read-only; SECURITY INVOKER so that \
             row-level security applies.",
            body,
        );
    }

    /// A large reporting view: CTEs, window functions, the event log. It changes no table.
    fn module_report(&mut self, module: &mut Module) {
        let schema = module.schema;
        let t = self.table_index_any(&module.table);
        let table_ref = format!("{}.{}", self.tables[t].schema, q(&self.tables[t].name));
        let notes_ref = format!("{schema}.{}", module.notes);
        let entity = singular(&module.table);
        let extra: Vec<String> = self.tables[t]
            .cols
            .iter()
            .filter(|c| matches!(c.ty, Ty::Int | Ty::BigInt | Ty::SmallInt | Ty::Numeric(..)))
            .filter(|c| c.name != "id")
            .take(3)
            .map(|c| {
                format!(
                    "        sum(b.{c}) OVER w AS {n}_running,\n        avg(b.{c}) OVER (PARTITION BY b.month) AS {n}_monthly_avg,\n",
                    c = q(&c.name),
                    n = c.name.to_lowercase()
                )
            })
            .collect();
        // `t.*` in a view: every column it has now is a dependency.
        for col in &mut self.tables[t].cols {
            col.pinned = true;
        }
        let extra = extra.concat();
        let body = format!(
            "CREATE OR REPLACE VIEW {entity}_monthly_report AS\nWITH base AS (\n    SELECT\n        t.*,\n        date_trunc('month', t.created_at) AS month,\n        row_number() OVER (PARTITION BY date_trunc('month', t.created_at) ORDER BY t.created_at) AS seq_in_month\n    FROM {table_ref} AS t\n    WHERE t.created_at >= date_trunc('year', now()) - interval '2 years'\n),\nnote_stats AS (\n    SELECT\n        n.parent_id,\n        count(*) AS notes,\n        count(*) FILTER (WHERE n.pinned_at IS NOT NULL) AS pinned_notes,\n        min(n.created_at) AS first_note_at,\n        max(n.created_at) AS last_note_at,\n        percentile_cont(0.5) WITHIN GROUP (ORDER BY length(n.body)) AS median_note_length\n    FROM {notes_ref} AS n\n    GROUP BY n.parent_id\n),\nevents AS (\n    SELECT\n        date_trunc('month', e.occurred_at) AS month,\n        count(*) AS migrations_logged\n    FROM audit.event_log AS e\n    WHERE e.kind = 'migration' AND e.payload ->> 'table' = '{}'\n    GROUP BY 1\n)\nSELECT\n        b.id,\n        b.month,\n        b.seq_in_month,\n        coalesce(s.notes, 0) AS notes,\n        coalesce(s.pinned_notes, 0) AS pinned_notes,\n        s.first_note_at,\n        s.last_note_at,\n        s.median_note_length,\n{extra}        rank() OVER (PARTITION BY b.month ORDER BY coalesce(s.notes, 0) DESC, b.id) AS busiest_rank,\n        lag(b.created_at) OVER w AS previous_created_at,\n        b.created_at - lag(b.created_at) OVER w AS gap_since_previous,\n        coalesce(ev.migrations_logged, 0) AS migrations_logged,\n        CASE\n            WHEN s.last_note_at IS NULL THEN 'never'\n            WHEN s.last_note_at > now() - interval '7 days' THEN 'this week'\n            WHEN s.last_note_at > now() - interval '30 days' THEN 'this month'\n            ELSE 'older'\n        END AS note_recency\nFROM base AS b\nLEFT JOIN note_stats AS s ON s.parent_id = b.id\nLEFT JOIN events AS ev ON ev.month = b.month\nWINDOW w AS (ORDER BY b.created_at, b.id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW);\n\nCOMMENT ON VIEW {entity}_monthly_report IS 'Monthly activity of {}; read by the finance dashboard (refreshes hourly).';\nGRANT SELECT ON {entity}_monthly_report TO PUBLIC;\n",
            self.tables[t].name,
            module.table,
        );
        self.file(
            schema,
            &format!("{entity}_monthly_report"),
            "Monthly report for the finance dashboard: one row per record with its note activity, \
             running totals and the migrations that touched the table. Replaces the spreadsheet \
             export; the numbers were reconciled against it for three months before the switch.",
            body,
        );
    }

    /// A migration of 1 to 4 random changes to the module's table (or its notes).
    fn module_evolve(&mut self, module: &mut Module) {
        let schema = module.schema;
        let mut body = String::new();
        let mut directive = false;
        let changes = 1 + self.rng.below(4);
        let mut names = Vec::new();
        for _ in 0..changes {
            let roll = self.rng.below(100);
            let table_name = if self.rng.chance(80) {
                module.table.clone()
            } else {
                module.notes.clone()
            };
            let Some(t) = self
                .tables
                .iter()
                .position(|x| x.alive && x.name == table_name && !x.member)
            else {
                continue;
            };
            let (sql, name) = match roll {
                0..=17 => self.op_add_column(schema, t),
                18..=25 => self.op_drop_column(schema, t),
                26..=35 => self.op_rename_column(schema, t),
                36..=44 => self.op_alter_type(schema, t),
                45..=51 => self.op_nullability(schema, t),
                52..=57 => self.op_constraint(schema, t),
                58..=63 => self.op_harmless(schema, t),
                64..=70 => self.op_enum(schema, module),
                71..=73 => self.op_multi(schema, t),
                74..=81 => self.op_do_block(schema, t),
                82..=84 => self.op_snapshot(schema, t),
                85..=87 => self.op_temp_fix(schema, t),
                88..=89 => self.op_like_copy(schema, t),
                90..=92 => {
                    directive = true;
                    self.op_concurrent_index(schema, t)
                }
                93..=94 => self.op_rename_table(schema, t, module),
                95..=96 => self.op_function_ddl(schema, t),
                _ => self.op_view_change(schema, t, module),
            };
            if !sql.is_empty() {
                let why = WHY[self.rng.below(WHY.len())];
                let _ = writeln!(body, "-- {}: {why}", name.replace('_', " "));
                body.push_str(&sql);
                body.push('\n');
                names.push(name);
            }
        }
        if body.is_empty() {
            let t = self.table_index(schema, &module.table);
            let (sql, name) = self.op_add_column(schema, t);
            body = sql;
            names.push(name);
        }
        names.dedup();
        let name = format!("{}_{}", module.table, names.join("_and_"));
        let name: String = name.chars().take(60).collect();
        let name = name.trim_end_matches('_').to_owned();
        let purpose = format!(
            "{} for {}: requested in the planning review, backfilled where the application needs values.",
            names.join(", ").replace('_', " "),
            module.table
        );
        if directive {
            body = format!("-- prost-db:no-transaction\n{body}");
        }
        self.file(schema, &name, &purpose, body);
    }
}

fn pinned(name: &str, ty: Ty, not_null: bool) -> Col {
    Col {
        name: name.to_owned(),
        ty,
        not_null,
        pinned: true,
    }
}

fn plain(name: &str, ty: Ty, not_null: bool) -> Col {
    Col {
        name: name.to_owned(),
        ty,
        not_null,
        pinned: false,
    }
}

fn singular(table: &str) -> String {
    table
        .strip_suffix("ies")
        .map(|s| format!("{s}y"))
        .or_else(|| table.strip_suffix("es").filter(|s| s.ends_with("ss") || s.ends_with("sh") || s.ends_with("ch")).map(str::to_owned))
        .or_else(|| table.strip_suffix('s').map(str::to_owned))
        .unwrap_or_else(|| table.to_owned())
}

include!("corpus_ops.rs");
