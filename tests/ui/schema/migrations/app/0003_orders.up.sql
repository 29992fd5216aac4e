-- Enums whose labels and names change, and columns of types the checks cannot see into.
CREATE TYPE order_status AS ENUM ('pending', 'paid', 'cancelled');
ALTER TYPE order_status ADD VALUE 'refunded' AFTER 'paid';
ALTER TYPE order_status RENAME VALUE 'cancelled' TO 'canceled';
CREATE TYPE mood AS ENUM ('happy', 'sad');
ALTER TYPE mood RENAME TO feeling;
CREATE TYPE dimensions AS (width INT, height INT);
CREATE EXTENSION IF NOT EXISTS ltree WITH SCHEMA public;

CREATE TABLE orders (
    id BIGSERIAL PRIMARY KEY,
    status order_status NOT NULL DEFAULT 'pending',
    history order_status[] NOT NULL DEFAULT '{}',
    feeling feeling,
    path public.ltree,
    size dimensions,
    "createdAt" TIMESTAMPTZ NOT NULL DEFAULT now()
);
