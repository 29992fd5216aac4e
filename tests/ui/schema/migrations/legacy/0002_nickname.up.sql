-- The column name is computed: the catalog cannot know it, so `accounts` is uncertain.
DO $$
DECLARE
    suffix text := 'name';
BEGIN
    EXECUTE format('ALTER TABLE accounts ADD COLUMN %I text', 'nick' || suffix);
END;
$$;
