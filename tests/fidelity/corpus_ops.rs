// The corpus's changes: one function per kind of change a module's migration makes, then
// the special cases written by hand. Included by `corpus_story.rs`.

impl Gen {
    fn reference(&self, schema: &str, t: usize) -> String {
        self.name_in(schema, &self.tables[t])
    }

    /// The table and the tables that inherit its columns (partitions, children).
    fn family_of(&self, t: usize) -> Vec<usize> {
        let mut out = vec![t];
        if self.tables[t].family {
            let prefix = format!("{}_", self.tables[t].name);
            out.extend((0..self.tables.len()).filter(|&i| {
                let x = &self.tables[i];
                x.alive && x.member && x.schema == self.tables[t].schema && x.name.starts_with(&prefix)
            }));
        }
        out
    }

    fn op_add_column(&mut self, schema: &'static str, t: usize) -> (String, String) {
        let col = self.random_col(schema, &self.tables[t].clone_shape());
        let def = self.col_def(&col);
        let if_not = if self.rng.chance(20) { "IF NOT EXISTS " } else { "" };
        let column_kw = if self.rng.chance(85) { "COLUMN " } else { "" };
        let sql = format!(
            "ALTER TABLE {} ADD {column_kw}{if_not}{def};\n",
            self.reference(schema, t)
        );
        for i in self.family_of(t) {
            self.tables[i].cols.push(col.clone());
        }
        (sql, format!("add_{}", col.name.to_lowercase()))
    }

    fn unpinned(&mut self, t: usize) -> Option<String> {
        let names: Vec<String> = self.tables[t]
            .cols
            .iter()
            .filter(|c| !c.pinned)
            .map(|c| c.name.clone())
            .collect();
        (!names.is_empty()).then(|| names[self.rng.below(names.len())].clone())
    }

    fn op_drop_column(&mut self, schema: &'static str, t: usize) -> (String, String) {
        let Some(name) = self.unpinned(t) else {
            return self.op_add_column(schema, t);
        };
        let if_exists = if self.rng.chance(30) { "IF EXISTS " } else { "" };
        let sql = format!(
            "ALTER TABLE {} DROP COLUMN {if_exists}{};\n",
            self.reference(schema, t),
            q(&name)
        );
        for i in self.family_of(t) {
            self.tables[i].cols.retain(|c| c.name != name);
        }
        (sql, format!("drop_{}", name.to_lowercase()))
    }

    fn op_rename_column(&mut self, schema: &'static str, t: usize) -> (String, String) {
        if self.tables[t].name.ends_with("_notes") {
            // Later functions and reports name the notes' columns.
            return self.op_add_column(schema, t);
        }
        let names: Vec<String> = self.tables[t]
            .cols
            .iter()
            .filter(|c| !matches!(c.name.as_str(), "id" | "updated_at" | "created_at"))
            .map(|c| c.name.clone())
            .collect();
        if names.is_empty() {
            return self.op_add_column(schema, t);
        }
        let old = names[self.rng.below(names.len())].clone();
        let base = match self.rng.below(3) {
            0 => format!("{}_old", old.to_lowercase()),
            1 => format!("legacy_{}", old.to_lowercase()),
            _ => (*self.rng.pick(&["details", "comment", "extra", "info", "memo"])).to_owned(),
        };
        let new = self.tables[t].fresh_name(&base);
        let column_kw = if self.rng.chance(70) { "COLUMN " } else { "" };
        let sql = format!(
            "ALTER TABLE {} RENAME {column_kw}{} TO {};\n",
            self.reference(schema, t),
            q(&old),
            q(&new)
        );
        for i in self.family_of(t) {
            for col in &mut self.tables[i].cols {
                if col.name == old {
                    col.name = new.clone();
                }
            }
        }
        (sql, format!("rename_{}", old.to_lowercase()))
    }

    fn op_alter_type(&mut self, schema: &'static str, t: usize) -> (String, String) {
        let candidates: Vec<(String, Ty, String)> = self.tables[t]
            .cols
            .iter()
            .filter(|c| !c.pinned)
            .filter_map(|c| {
                let (ty, using) = match &c.ty {
                    Ty::SmallInt => (Ty::Int, ""),
                    Ty::Int => (Ty::BigInt, ""),
                    Ty::Varchar(n) if *n < 400 => (Ty::Varchar(n + 100), ""),
                    Ty::Varchar(_) => (Ty::Text, ""),
                    Ty::Numeric(p, s) => (Ty::Numeric(p + 2, *s), ""),
                    Ty::Real => (Ty::Double, ""),
                    Ty::Text => (Ty::Varchar(300), ""),
                    Ty::Timestamp => (Ty::Timestamptz, "AT TIME ZONE 'UTC'"),
                    Ty::Json => (Ty::Jsonb, "::jsonb"),
                    Ty::Char(n) => (Ty::Varchar(u16::from(*n)), ""),
                    Ty::Date => (Ty::Timestamptz, "::timestamptz"),
                    _ => return None,
                };
                Some((c.name.clone(), ty, using.to_owned()))
            })
            .collect();
        if candidates.is_empty() {
            return self.op_rename_column(schema, t);
        }
        let (name, ty, using) = candidates[self.rng.below(candidates.len())].clone();
        let spelled = ty.sql(&mut self.rng);
        let how = if self.rng.chance(30) { "SET DATA TYPE" } else { "TYPE" };
        let using = if using.is_empty() {
            if self.rng.chance(25) {
                format!(" USING {}::{spelled}", q(&name))
            } else {
                String::new()
            }
        } else if let Some(cast) = using.strip_prefix("::") {
            format!(" USING {}::{cast}", q(&name))
        } else {
            format!(" USING {} {using}", q(&name))
        };
        let sql = format!(
            "ALTER TABLE {} ALTER COLUMN {} {how} {spelled}{using};\n",
            self.reference(schema, t),
            q(&name)
        );
        for i in self.family_of(t) {
            for col in &mut self.tables[i].cols {
                if col.name == name {
                    col.ty = ty.clone();
                }
            }
        }
        (sql, format!("widen_{}", name.to_lowercase()))
    }

    fn op_nullability(&mut self, schema: &'static str, t: usize) -> (String, String) {
        let reference = self.reference(schema, t);
        let nullable: Vec<Col> = self.tables[t]
            .cols
            .iter()
            .filter(|c| !c.not_null)
            .cloned()
            .collect();
        let not_null: Vec<Col> = self.tables[t]
            .cols
            .iter()
            .filter(|c| c.not_null && c.name != "id" && c.name != "parent_id")
            .cloned()
            .collect();
        if !nullable.is_empty() && (not_null.is_empty() || self.rng.chance(60)) {
            let col = nullable[self.rng.below(nullable.len())].clone();
            let value = col.ty.literal(&mut self.rng);
            let sql = format!(
                "UPDATE {reference} SET {c} = {value} WHERE {c} IS NULL;\nALTER TABLE {reference} ALTER COLUMN {c} SET NOT NULL;\n",
                c = q(&col.name)
            );
            for i in self.family_of(t) {
                for c in &mut self.tables[i].cols {
                    if c.name == col.name {
                        c.not_null = true;
                    }
                }
            }
            (sql, format!("require_{}", col.name.to_lowercase()))
        } else if !not_null.is_empty() {
            let pick = not_null[self.rng.below(not_null.len())].clone();
            let sql = format!(
                "ALTER TABLE {reference} ALTER {} DROP NOT NULL;\n",
                q(&pick.name)
            );
            for i in self.family_of(t) {
                for c in &mut self.tables[i].cols {
                    if c.name == pick.name {
                        c.not_null = false;
                    }
                }
            }
            (sql, format!("relax_{}", pick.name.to_lowercase()))
        } else {
            self.op_add_column(schema, t)
        }
    }

    fn op_constraint(&mut self, schema: &'static str, t: usize) -> (String, String) {
        let reference = self.reference(schema, t);
        let table = self.tables[t].name.clone();
        let numeric: Vec<String> = self.tables[t]
            .cols
            .iter()
            .filter(|c| matches!(c.ty, Ty::Int | Ty::BigInt | Ty::SmallInt | Ty::Numeric(..)))
            .filter(|c| c.name != "id" && c.name != "parent_id")
            .map(|c| c.name.clone())
            .collect();
        let n = self.rng.below(1000);
        if table.ends_with("_notes") && self.rng.chance(60) {
            let constraint = format!("{table}_parent_id_fkey");
            let sql = if self.rng.chance(50) {
                format!(
                    "ALTER TABLE {reference} ALTER CONSTRAINT {constraint} DEFERRABLE INITIALLY DEFERRED;\n"
                )
            } else {
                format!("ALTER TABLE {reference} ALTER CONSTRAINT {constraint} NOT DEFERRABLE;\n")
            };
            return (sql, "defer_parent_check".to_owned());
        }
        let Some(col) = numeric.first().map(|_| numeric[self.rng.below(numeric.len())].clone())
        else {
            let sql = format!(
                "ALTER TABLE {reference} ADD CONSTRAINT {table}_created_check_{n} CHECK (created_at > '2000-01-01');\n"
            );
            return (sql, "check_created".to_owned());
        };
        let name = format!("{table}_{}_check_{n}", col.to_lowercase());
        let sql = match self.rng.below(3) {
            0 => format!(
                "ALTER TABLE {reference} ADD CONSTRAINT {name} CHECK ({c} >= 0) NOT VALID;\nALTER TABLE {reference} VALIDATE CONSTRAINT {name};\n",
                c = q(&col)
            ),
            1 => format!(
                "ALTER TABLE {reference} ADD CONSTRAINT {name} CHECK ({c} IS NULL OR {c} < 100000);\nALTER TABLE {reference} RENAME CONSTRAINT {name} TO {name}_r;\n",
                c = q(&col)
            ),
            _ => format!(
                "ALTER TABLE {reference} ADD CONSTRAINT {name} CHECK ({c} > -1);\nALTER TABLE {reference} DROP CONSTRAINT IF EXISTS {name};\n",
                c = q(&col)
            ),
        };
        (sql, format!("check_{}", col.to_lowercase()))
    }

    fn op_harmless(&mut self, schema: &'static str, t: usize) -> (String, String) {
        let reference = self.reference(schema, t);
        let table = self.tables[t].name.clone();
        let cols = self.tables[t].cols.clone();
        let col = cols[self.rng.below(cols.len())].clone();
        let c = q(&col.name);
        let sql = match self.rng.below(12) {
            0 => format!("ALTER TABLE {reference} ALTER COLUMN {c} SET STATISTICS 500;\n"),
            1 => format!("ALTER TABLE {reference} SET (fillfactor = 90, autovacuum_vacuum_scale_factor = 0.05);\n"),
            2 => format!("ALTER TABLE {reference} REPLICA IDENTITY FULL;\n"),
            3 => {
                let n = self.rng.below(100_000);
                format!(
                    "ALTER TABLE {reference} ENABLE ROW LEVEL SECURITY;\nCREATE POLICY {table}_read_{n} ON {reference} FOR SELECT USING (true);\nALTER TABLE {reference} FORCE ROW LEVEL SECURITY;\n"
                )
            }
            4 => format!("ALTER TABLE {reference} OWNER TO CURRENT_USER;\n"),
            5 => {
                let value = col.ty.literal(&mut self.rng);
                if col.name == "id" {
                    format!("ALTER TABLE {reference} ALTER COLUMN created_at SET DEFAULT clock_timestamp();\n")
                } else {
                    format!("ALTER TABLE {reference} ALTER COLUMN {c} SET DEFAULT {value};\n")
                }
            }
            6 => format!(
                "COMMENT ON COLUMN {reference}.{c} IS 'See the data dictionary; values are validated by the application.';\n"
            ),
            7 => format!("GRANT SELECT ({c}) ON {reference} TO PUBLIC;\nREVOKE UPDATE ON {reference} FROM PUBLIC;\n"),
            8 => format!("ALTER TABLE {reference} ALTER COLUMN {c} SET (n_distinct = -0.5);\n"),
            9 => format!("ALTER TABLE {reference} DISABLE TRIGGER USER;\nALTER TABLE {reference} ENABLE TRIGGER USER;\n"),
            10 => format!("ANALYZE {reference};\nCREATE STATISTICS IF NOT EXISTS {table}_stats (ndistinct) ON id, created_at FROM {reference};\n"),
            _ => match col.ty {
                Ty::Text | Ty::Jsonb | Ty::Bytea | Ty::Varchar(_) => {
                    format!("ALTER TABLE {reference} ALTER COLUMN {c} SET STORAGE EXTERNAL;\n")
                }
                _ => format!("ALTER TABLE {reference} ALTER COLUMN {c} SET STATISTICS -1;\n"),
            },
        };
        (sql, "tune".to_owned())
    }

    fn op_enum(&mut self, schema: &'static str, module: &mut Module) -> (String, String) {
        let Some(status) = module.status.clone() else {
            let t = self.table_index_any(&module.table);
            let name = format!("{}_stage", singular(&module.table));
            let mut sql = self.new_enum(schema, &name, &["intake", "working", "done"]);
            module.status = Some(name.clone());
            let col_name = self.tables[t].fresh_name("stage");
            let reference = self.reference(schema, t);
            let spelled = if self.tables[t].schema == schema {
                name.clone()
            } else {
                format!("{schema}.{name}")
            };
            let _ = writeln!(sql, "ALTER TABLE {reference} ADD COLUMN {col_name} {spelled};");
            self.tables[t]
                .cols
                .push(plain(&col_name, Ty::User(spelled, "intake".into()), false));
            return (sql, format!("{name}_type"));
        };
        let e = self
            .enums
            .iter()
            .position(|e| e.schema == schema && e.name == status)
            .expect("the module's enum");
        let labels = self.enums[e].labels.clone();
        match self.rng.below(10) {
            0..=4 => {
                let pool = ["archived", "expired", "waiting", "escalated", "merged", "void", "held"];
                let Some(label) = pool.iter().find(|l| !labels.iter().any(|x| x == *l)) else {
                    return (String::new(), String::new());
                };
                let place = match self.rng.below(3) {
                    0 => format!(" BEFORE '{}'", labels[self.rng.below(labels.len())]),
                    1 => format!(" AFTER '{}'", labels[self.rng.below(labels.len())]),
                    _ => String::new(),
                };
                let if_not = if self.rng.chance(40) { "IF NOT EXISTS " } else { "" };
                let sql = format!("ALTER TYPE {status} ADD VALUE {if_not}'{label}'{place};\n");
                let position = if let Some(before) = place.strip_prefix(" BEFORE '") {
                    labels.iter().position(|l| l == before.trim_end_matches('\'')).unwrap_or(0)
                } else if let Some(after) = place.strip_prefix(" AFTER '") {
                    labels.iter().position(|l| l == after.trim_end_matches('\'')).unwrap_or(0) + 1
                } else {
                    labels.len()
                };
                self.enums[e].labels.insert(position, (*label).to_owned());
                (sql, format!("{status}_add_{label}"))
            }
            5..=7 => {
                let old = labels[self.rng.below(labels.len())].clone();
                let new = format!("{old}_v2");
                if labels.contains(&new) {
                    return (String::new(), String::new());
                }
                let sql = format!("ALTER TYPE {status} RENAME VALUE '{old}' TO '{new}';\n");
                for label in &mut self.enums[e].labels {
                    if *label == old {
                        *label = new.clone();
                    }
                }
                self.relabel_everywhere(&status, &old, &new);
                (sql, format!("{status}_relabel"))
            }
            _ => {
                let new = format!("{status}_kind");
                if self.enums.iter().any(|x| x.schema == schema && x.name == new) {
                    return (String::new(), String::new());
                }
                let sql = format!("ALTER TYPE {status} RENAME TO {new};\n");
                self.enums[e].name = new.clone();
                self.rename_type_everywhere(schema, &status, &new);
                module.status = Some(new);
                (sql, format!("rename_{status}"))
            }
        }
    }

    fn table_index_any(&self, name: &str) -> usize {
        self.tables
            .iter()
            .position(|t| t.alive && t.name == name)
            .unwrap_or_else(|| panic!("generator: no table {name}"))
    }

    fn op_multi(&mut self, schema: &'static str, t: usize) -> (String, String) {
        let reference = self.reference(schema, t);
        let mut actions = Vec::new();
        let mut before = String::new();
        let col = self.random_col(schema, &self.tables[t].clone_shape());
        actions.push(format!("ADD COLUMN {}", self.col_def(&col)));
        for i in self.family_of(t) {
            self.tables[i].cols.push(col.clone());
        }
        if let Some(name) = self.unpinned(t).filter(|n| *n != col.name) {
            let c = self.tables[t].col(&name).expect("listed").clone();
            if c.not_null {
                actions.push(format!("ALTER COLUMN {} DROP DEFAULT", q(&name)));
            } else {
                let value = c.ty.literal(&mut self.rng);
                let _ = writeln!(
                    before,
                    "UPDATE {reference} SET {n} = {value} WHERE {n} IS NULL;",
                    n = q(&name)
                );
                actions.push(format!("ALTER COLUMN {} SET NOT NULL", q(&name)));
                for i in self.family_of(t) {
                    for x in &mut self.tables[i].cols {
                        if x.name == name {
                            x.not_null = true;
                        }
                    }
                }
            }
        }
        if let Some(name) = self.unpinned(t).filter(|n| *n != col.name)
            && self.rng.chance(50)
        {
            actions.push(format!("DROP COLUMN IF EXISTS {} CASCADE", q(&name)));
            for i in self.family_of(t) {
                self.tables[i].cols.retain(|x| x.name != name);
            }
        }
        let sql = format!(
            "{before}ALTER TABLE {reference}\n    {};\n",
            actions.join(",\n    ")
        );
        (sql, "reshape".to_owned())
    }

    fn op_do_block(&mut self, schema: &'static str, t: usize) -> (String, String) {
        let reference = self.reference(schema, t);
        let table = self.tables[t].name.clone();
        let table_schema = self.tables[t].schema;
        match self.rng.below(20) {
            0..=4 => {
                // Data only: counts, notices, an insert into the event log.
                let sql = format!(
                    "DO $$\nDECLARE\n    n integer;\nBEGIN\n    SELECT count(*) INTO n FROM {reference};\n    IF n = 0 THEN\n        RAISE NOTICE 'table % is still empty', '{table}';\n    ELSE\n        RAISE NOTICE 'table % has % rows', '{table}', n;\n    END IF;\n    UPDATE {reference} SET created_at = created_at WHERE false;\n    INSERT INTO audit.event_log (occurred_at, kind, payload)\n    VALUES ('2024-06-01', 'migration', jsonb_build_object('table', '{table}', 'rows', n));\nEND\n$$;\n"
                );
                (sql, "report".to_owned())
            }
            5..=8 => {
                // Idempotent column: guarded by a catalog lookup of that very column.
                let col = self.random_col(schema, &self.tables[t].clone_shape());
                let def = self.col_def(&col);
                let sql = format!(
                    "DO $$\nBEGIN\n    IF NOT EXISTS (\n        SELECT 1 FROM information_schema.columns\n        WHERE table_schema = '{table_schema}' AND table_name = '{table}' AND column_name = '{}'\n    ) THEN\n        ALTER TABLE {reference} ADD COLUMN {def};\n    END IF;\nEND\n$$;\n",
                    col.name
                );
                for i in self.family_of(t) {
                    self.tables[i].cols.push(col.clone());
                }
                (sql, format!("ensure_{}", col.name.to_lowercase()))
            }
            9..=10 => {
                // Idempotent type, then a column of it.
                let name = format!("{}_flag_{}", singular(&table), self.rng.below(100));
                if self.enums.iter().any(|e| e.schema == schema && e.name == name) {
                    return (String::new(), String::new());
                }
                self.enums.push(EnumType {
                    schema,
                    name: name.clone(),
                    labels: vec!["on".into(), "off".into()],
                });
                let col_name = self.tables[t].fresh_name("flag");
                let spelled = if table_schema == schema {
                    name.clone()
                } else {
                    format!("{schema}.{name}")
                };
                let sql = format!(
                    "DO $$\nBEGIN\n    CREATE TYPE {name} AS ENUM ('on', 'off');\nEXCEPTION\n    WHEN duplicate_object THEN NULL;\nEND\n$$;\nALTER TABLE {reference} ADD COLUMN {col_name} {spelled} NOT NULL DEFAULT 'off';\n"
                );
                let col = plain(&col_name, Ty::User(spelled, "off".into()), true);
                for i in self.family_of(t) {
                    self.tables[i].cols.push(col.clone());
                }
                (sql, format!("{name}_type"))
            }
            11..=13 => {
                // Dynamic DDL: the catalog cannot know the column.
                let col_name = self.tables[t].fresh_name("sync_version");
                let sql = format!(
                    "DO $$\nDECLARE\n    target text := '{table}';\nBEGIN\n    EXECUTE format('ALTER TABLE {table_schema}.%I ADD COLUMN %I integer', target, '{col_name}');\nEND\n$$;\n"
                );
                for i in self.family_of(t) {
                    self.tables[i].cols.push(plain(&col_name, Ty::Int, false));
                }
                (sql, format!("dynamic_{col_name}"))
            }
            14..=15 => {
                // Dynamic but harmless statements.
                let sql = format!(
                    "DO $$\nBEGIN\n    EXECUTE format('ANALYZE %I.%I', '{table_schema}', '{table}');\n    EXECUTE 'GRANT SELECT ON ' || quote_ident('{table_schema}') || '.' || quote_ident('{table}') || ' TO PUBLIC';\n    EXECUTE format('ALTER TABLE %I.%I SET (autovacuum_enabled = true)', '{table_schema}', '{table}');\n    EXECUTE format('COMMENT ON TABLE %I.%I IS %L', '{table_schema}', '{table}', 'maintained');\nEND\n$$;\n"
                );
                (sql, "maintenance".to_owned())
            }
            16..=17 => {
                // Straight-line DDL in a block: always runs.
                let col = self.random_col(schema, &self.tables[t].clone_shape());
                let def = self.col_def(&col);
                let sql = format!(
                    "DO $$\nBEGIN\n    ALTER TABLE {reference} ADD COLUMN {def};\n    RAISE NOTICE 'added % to %', '{}', '{table}';\nEND\n$$;\n",
                    col.name
                );
                for i in self.family_of(t) {
                    self.tables[i].cols.push(col.clone());
                }
                (sql, format!("block_add_{}", col.name.to_lowercase()))
            }
            18 => {
                // Depends on the server: true on PostgreSQL 12 and later.
                let col_name = self.tables[t].fresh_name("search_vector");
                let sql = format!(
                    "DO $$\nBEGIN\n    IF current_setting('server_version_num')::integer >= 120000 THEN\n        ALTER TABLE {reference} ADD COLUMN {col_name} tsvector;\n    END IF;\nEND\n$$;\n"
                );
                for i in self.family_of(t) {
                    // tsvector: never retyped by a later step.
                    self.tables[i].cols.push(pinned(&col_name, Ty::Text, false));
                }
                (sql, format!("maybe_{col_name}"))
            }
            _ => {
                // Depends on a role that does not exist here: nothing happens.
                let sql = format!(
                    "DO $$\nBEGIN\n    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'reporting_reader') THEN\n        ALTER TABLE {reference} ADD COLUMN report_group text;\n        EXECUTE 'GRANT SELECT ON {table_schema}.{table} TO reporting_reader';\n    END IF;\nEND\n$$;\n"
                );
                (sql, "reporting_hook".to_owned())
            }
        }
    }

    /// `CREATE TABLE ... AS SELECT` (or `SELECT ... INTO`): a copy for reports.
    fn op_snapshot(&mut self, schema: &'static str, t: usize) -> (String, String) {
        let reference = self.reference(schema, t);
        let table = self.tables[t].name.clone();
        let name = (1..)
            .map(|n| format!("{table}_snapshot_{n}"))
            .find(|n| !self.tables.iter().any(|x| x.alive && &x.name == n))
            .expect("a free name");
        let cols = self.tables[t].cols.clone();
        let mut picked: Vec<Col> = Vec::new();
        let mut items = Vec::new();
        for col in &cols {
            if !self.rng.chance(60) {
                continue;
            }
            if matches!(col.ty, Ty::Text | Ty::Varchar(_)) && self.rng.chance(40) {
                items.push(format!("t.{}::varchar(50) AS {}_short", q(&col.name), col.name.to_lowercase()));
                picked.push(plain(&format!("{}_short", col.name.to_lowercase()), Ty::Varchar(50), false));
            } else if matches!(col.ty, Ty::Int | Ty::SmallInt) && self.rng.chance(40) {
                items.push(format!("CAST(t.{} AS bigint)", q(&col.name)));
                picked.push(plain(&col.name, Ty::BigInt, false));
            } else {
                items.push(format!("t.{}", q(&col.name)));
                let mut c = col.clone();
                c.not_null = false;
                c.pinned = false;
                picked.push(c);
            }
        }
        if items.is_empty() {
            items.push("t.id".to_owned());
            picked.push(plain("id", cols[0].ty.clone(), false));
        }
        items.push("'v1'::text AS snapshot_tag".to_owned());
        picked.push(plain("snapshot_tag", Ty::Text, false));
        let roll = self.rng.below(10);
        let sql = if roll < 2 {
            // Aggregates: the catalog does not type them.
            picked = vec![
                plain("day", Ty::Timestamptz, false),
                plain("n", Ty::BigInt, false),
            ];
            format!(
                "CREATE TABLE {name} AS\nSELECT date_trunc('day', t.created_at) AS day, count(*) AS n\nFROM {reference} AS t\nGROUP BY 1;\n"
            )
        } else if roll < 4 {
            format!(
                "SELECT {}\nINTO {name}\nFROM {reference} AS t\nWHERE t.created_at < now();\n",
                items.join(", ")
            )
        } else {
            let no_data = if self.rng.chance(50) { "\nWITH NO DATA" } else { "" };
            format!(
                "CREATE TABLE {name} AS\nSELECT {}\nFROM {reference} AS t{no_data};\n",
                items.join(",\n       ")
            )
        };
        self.tables.push(Table {
            schema,
            name: name.clone(),
            cols: picked,
            family: false,
            member: false,
            alive: true,
        });
        (sql, "snapshot".to_owned())
    }

    fn op_temp_fix(&mut self, schema: &'static str, t: usize) -> (String, String) {
        let reference = self.reference(schema, t);
        let table = self.tables[t].name.clone();
        let temp = format!("tmp_{table}");
        let sql = match self.rng.below(3) {
            0 => format!(
                "CREATE TEMP TABLE {temp} AS SELECT id FROM {reference} WHERE created_at < '2020-01-01';\nDELETE FROM {reference} WHERE id IN (SELECT id FROM {temp});\nDROP TABLE {temp};\n"
            ),
            1 => format!(
                "CREATE TEMPORARY TABLE {temp} (LIKE {reference});\nINSERT INTO {temp} SELECT * FROM {reference};\nALTER TABLE {temp} ADD COLUMN checked boolean NOT NULL DEFAULT false;\nUPDATE {temp} SET checked = true;\nDROP TABLE IF EXISTS {temp};\n"
            ),
            _ => format!(
                "CREATE TEMP TABLE IF NOT EXISTS {temp} (id bigint PRIMARY KEY, reason text NOT NULL) ON COMMIT PRESERVE ROWS;\nINSERT INTO {temp} (id, reason) SELECT 1, 'placeholder' WHERE false;\nDROP TABLE {temp};\n"
            ),
        };
        (sql, "cleanup".to_owned())
    }

    fn op_like_copy(&mut self, schema: &'static str, t: usize) -> (String, String) {
        let reference = self.reference(schema, t);
        let table = self.tables[t].name.clone();
        let name = (1..)
            .map(|n| {
                if n == 1 {
                    format!("{table}_archive")
                } else {
                    format!("{table}_archive_{n}")
                }
            })
            .find(|n| !self.tables.iter().any(|x| x.alive && &x.name == n))
            .expect("a free name");
        let mut cols: Vec<Col> = self.tables[t]
            .cols
            .iter()
            .cloned()
            .map(|mut c| {
                c.pinned = false;
                c
            })
            .collect();
        let sql = match self.rng.below(3) {
            0 => format!("CREATE TABLE {name} (LIKE {reference} INCLUDING ALL);\n"),
            1 => {
                cols.push(plain("archived_at", Ty::Timestamptz, true));
                format!(
                    "CREATE TABLE {name} (\n    LIKE {reference} INCLUDING DEFAULTS INCLUDING CONSTRAINTS,\n    archived_at timestamptz NOT NULL DEFAULT now()\n);\n"
                )
            }
            _ => format!("CREATE TABLE {name} (LIKE {reference} EXCLUDING ALL);\n"),
        };
        self.tables.push(Table {
            schema,
            name: name.clone(),
            cols,
            family: false,
            member: false,
            alive: true,
        });
        (sql, "archive_table".to_owned())
    }

    fn op_concurrent_index(&mut self, schema: &'static str, t: usize) -> (String, String) {
        let reference = self.reference(schema, t);
        let table = self.tables[t].name.clone();
        let cols: Vec<Col> = self.tables[t]
            .cols
            .iter()
            .filter(|c| !matches!(c.ty, Ty::Json))
            .cloned()
            .collect();
        let col = &cols[self.rng.below(cols.len())];
        let n = self.rng.below(1000);
        let method = match col.ty {
            Ty::Jsonb | Ty::TextArray | Ty::IntArray => " USING gin",
            _ => "",
        };
        let sql = format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {table}_idx_{n} ON {reference}{method} ({});\nDROP INDEX CONCURRENTLY IF EXISTS {table}_idx_{};\n",
            q(&col.name),
            n + 1
        );
        (sql, "index".to_owned())
    }

    fn op_rename_table(
        &mut self,
        schema: &'static str,
        t: usize,
        module: &mut Module,
    ) -> (String, String) {
        if self.tables[t].name != module.table {
            return self.op_add_column(schema, t);
        }
        let reference = self.reference(schema, t);
        if self.rng.chance(40) {
            let here = self.tables[t].schema;
            // A schema that exists already: the migrator creates each when it reaches it.
            let Some(&to) = SCHEMAS.iter().rev().find(|s| **s < here) else {
                return self.op_add_column(schema, t);
            };
            let sql = format!("ALTER TABLE {reference} SET SCHEMA {to};\n");
            self.tables[t].schema = to;
            return (sql, format!("move_to_{to}"));
        }
        let new = format!("{}_v2", module.table);
        if self.tables.iter().any(|x| x.alive && x.name == new) {
            return self.op_add_column(schema, t);
        }
        let sql = format!("ALTER TABLE {reference} RENAME TO {new};\n");
        self.tables[t].name = new.clone();
        module.table = new;
        (sql, "rename_table".to_owned())
    }

    fn op_function_ddl(&mut self, schema: &'static str, t: usize) -> (String, String) {
        let table_schema = self.tables[t].schema;
        let table = self.tables[t].name.clone();
        let col = self.tables[t].fresh_name("migrated_at");
        let sql = format!(
            "CREATE OR REPLACE FUNCTION {schema}.ensure_column(tbl regclass, col text, coltype text)\n    RETURNS void\n    LANGUAGE plpgsql\nAS $fn$\nBEGIN\n    EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS %I %s', tbl, col, coltype);\nEND;\n$fn$;\n\nSELECT {schema}.ensure_column('{table_schema}.{table}', '{col}', 'timestamptz');\n"
        );
        for i in self.family_of(t) {
            self.tables[i]
                .cols
                .push(plain(&col, Ty::Timestamptz, false));
        }
        (sql, format!("ensure_{col}"))
    }

    fn op_view_change(
        &mut self,
        schema: &'static str,
        t: usize,
        module: &mut Module,
    ) -> (String, String) {
        let reference = self.reference(schema, t);
        let table = self.tables[t].name.clone();
        match self.rng.below(3) {
            0 => {
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
                let list = cols
                    .iter()
                    .map(|c| format!("    t.{}", q(c)))
                    .collect::<Vec<_>>()
                    .join(",\n");
                let view = &module.view;
                let sql = format!(
                    "DROP VIEW IF EXISTS {view};\nCREATE VIEW {view} AS\nSELECT\n{list}\nFROM {reference} AS t\nWHERE t.created_at IS NOT NULL;\n"
                );
                (sql, "rebuild_view".to_owned())
            }
            1 => {
                let name = format!("{table}_daily");
                let sql = format!(
                    "CREATE MATERIALIZED VIEW IF NOT EXISTS {name} AS\nSELECT date_trunc('day', created_at) AS day, count(*) AS total\nFROM {reference}\nGROUP BY 1\nWITH NO DATA;\nREFRESH MATERIALIZED VIEW {name};\n"
                );
                (sql, "daily_view".to_owned())
            }
            _ => {
                let old = module.view.clone();
                let new = format!("{old}_v");
                let sql = format!("ALTER VIEW IF EXISTS {old} RENAME TO {new};\n");
                module.view = new;
                (sql, "rename_view".to_owned())
            }
        }
    }
}

impl Table {
    /// The shape needed to choose a fresh column name.
    fn clone_shape(&self) -> Table {
        Table {
            schema: self.schema,
            name: self.name.clone(),
            cols: self.cols.clone(),
            family: self.family,
            member: self.member,
            alive: self.alive,
        }
    }
}

include!("corpus_specials.rs");
