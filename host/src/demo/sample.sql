-- The demo's sample schema: a small shop with comments, keys, an enum, arrays, jsonb,
-- a view, a materialized view and a mixed-case table. Loaded as the superuser; the
-- server connects as mcp_reader, a role that can only read (the recommended setup).

CREATE TYPE order_status AS ENUM ('pending', 'paid', 'shipped', 'cancelled');
COMMENT ON TYPE order_status IS 'Lifecycle of an order';

CREATE TABLE customers (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email       text        NOT NULL UNIQUE,
    full_name   text        NOT NULL,
    country     char(2)     NOT NULL DEFAULT 'US',
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE customers IS 'People with an account in the shop';
COMMENT ON COLUMN customers.country IS 'ISO 3166-1 alpha-2 country code';

CREATE TABLE products (
    id          serial PRIMARY KEY,
    sku         text          NOT NULL UNIQUE,
    name        text          NOT NULL,
    price       numeric(10,2) NOT NULL CHECK (price > 0),
    tags        text[]        NOT NULL DEFAULT '{}',
    attributes  jsonb,
    discontinued boolean      NOT NULL DEFAULT false
);
COMMENT ON TABLE products IS 'Things the shop sells';
COMMENT ON COLUMN products.price IS 'Current list price in USD';

CREATE TABLE orders (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id  bigint       NOT NULL REFERENCES customers (id),
    status       order_status NOT NULL DEFAULT 'pending',
    placed_at    timestamptz  NOT NULL,
    shipped_on   date
);
COMMENT ON TABLE orders IS 'One checkout by one customer';
CREATE INDEX orders_customer_idx ON orders (customer_id);

CREATE TABLE order_items (
    order_id    bigint        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no     integer       NOT NULL,
    product_id  integer       NOT NULL REFERENCES products (id),
    quantity    integer       NOT NULL CHECK (quantity > 0),
    unit_price  numeric(10,2) NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
COMMENT ON TABLE order_items IS 'Lines of an order, priced at checkout';

CREATE TABLE "ProductReviews" (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    product_id  integer     NOT NULL REFERENCES products (id),
    "Rating"    smallint    NOT NULL CHECK ("Rating" BETWEEN 1 AND 5),
    body        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE "ProductReviews" IS 'Customer reviews (a mixed-case name, quoted in SQL)';

CREATE VIEW order_totals AS
SELECT o.id AS order_id, o.customer_id, o.status,
       sum(i.quantity * i.unit_price) AS total
  FROM orders o JOIN order_items i ON i.order_id = o.id
 GROUP BY o.id;
COMMENT ON VIEW order_totals IS 'Order value, summed from its lines';

INSERT INTO customers (email, full_name, country, created_at) VALUES
    ('ada@example.com',    'Ada Lovelace',     'GB', '2024-01-05 09:30:00+00'),
    ('grace@example.com',  'Grace Hopper',     'US', '2024-01-17 14:02:00+00'),
    ('alan@example.com',   'Alan Turing',      'GB', '2024-02-01 08:15:00+00'),
    ('edsger@example.com', 'Edsger Dijkstra',  'NL', '2024-02-20 19:45:00+00'),
    ('barbara@example.com','Barbara Liskov',   'US', '2024-03-03 11:00:00+00');

INSERT INTO products (sku, name, price, tags, attributes, discontinued) VALUES
    ('KB-01',  'Mechanical keyboard', 129.00, '{hardware,input}',  '{"switch": "brown", "layout": "ANSI"}', false),
    ('MS-02',  'Wireless mouse',       49.50, '{hardware,input}',  '{"dpi": 1600}', false),
    ('MN-27',  '27" monitor',         329.99, '{hardware,display}', '{"resolution": "2560x1440"}', false),
    ('CB-USB', 'USB-C cable',           9.95, '{accessory}',        NULL, false),
    ('BK-SICP','SICP (book)',          55.00, '{book}',             '{"pages": 657}', false),
    ('BK-TAOCP','TAOCP vol. 1',        79.99, '{book}',             '{"pages": 672}', true);

INSERT INTO orders (customer_id, status, placed_at, shipped_on) VALUES
    (1, 'shipped',   '2024-03-01 10:00:00+00', '2024-03-03'),
    (1, 'paid',      '2024-04-12 16:20:00+00', NULL),
    (2, 'shipped',   '2024-03-15 09:05:00+00', '2024-03-18'),
    (3, 'cancelled', '2024-03-20 12:00:00+00', NULL),
    (4, 'pending',   '2024-04-30 23:59:59+00', NULL),
    (5, 'shipped',   '2024-04-02 07:45:00+00', '2024-04-05');

INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price) VALUES
    (1, 1, 1, 1, 129.00), (1, 2, 4, 2, 9.95),
    (2, 1, 3, 1, 329.99),
    (3, 1, 5, 1, 55.00), (3, 2, 6, 1, 79.99),
    (4, 1, 2, 1, 49.50),
    (5, 1, 1, 2, 129.00), (5, 2, 2, 2, 49.50),
    (6, 1, 4, 5, 9.95);

INSERT INTO "ProductReviews" (product_id, "Rating", body) VALUES
    (1, 5, 'Best keyboard I have owned'),
    (1, 4, 'Loud but lovely'),
    (5, 5, 'A classic'),
    (3, 3, NULL);

CREATE MATERIALIZED VIEW product_sales AS
SELECT p.id AS product_id, p.name, coalesce(sum(i.quantity), 0) AS units_sold
  FROM products p LEFT JOIN order_items i ON i.product_id = p.id
 GROUP BY p.id;
COMMENT ON MATERIALIZED VIEW product_sales IS 'Units sold per product (refresh to update)';

ANALYZE;

CREATE ROLE mcp_reader LOGIN;
COMMENT ON ROLE mcp_reader IS 'What mcp-sandbox connects as: read-only';
GRANT USAGE ON SCHEMA public TO mcp_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO mcp_reader;
