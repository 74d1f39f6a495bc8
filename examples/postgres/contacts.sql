-- The table the example keeps in sync with the normalized contacts topic
-- (one column per field of schemas/contact.avsc). The sink never alters
-- it; `ferry_sink_offsets` (the consumed offsets) it creates itself.
CREATE TABLE IF NOT EXISTS contacts (
    id             text PRIMARY KEY,
    name           text,
    email          text,
    phone          text,
    source         text NOT NULL,
    updated_at     timestamptz,
    lifetime_value numeric(18, 2),
    raw            text NOT NULL
);
