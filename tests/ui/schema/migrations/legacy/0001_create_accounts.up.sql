CREATE TABLE accounts (
    id BIGSERIAL PRIMARY KEY,
    login TEXT NOT NULL
);

-- Idempotent column add: the catalog cannot see inside a DO block.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_name = 'accounts' AND column_name = 'email') THEN
        ALTER TABLE accounts ADD COLUMN email TEXT;
    END IF;
END;
$$;
