CREATE TYPE item_state AS ENUM ('new', 'sold');

CREATE TABLE items (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title TEXT NOT NULL,
    legacy_code TEXT,
    state item_state NOT NULL DEFAULT 'new',
    price NUMERIC(10, 2) NOT NULL,
    tags TEXT[] NOT NULL DEFAULT '{}'
);
