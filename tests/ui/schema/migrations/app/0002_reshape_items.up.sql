ALTER TABLE items DROP COLUMN legacy_code;
ALTER TABLE items RENAME COLUMN title TO name;
