-- The durable record of the sale. Redis decides availability while the sale runs;
-- these tables remember stores, products, customers, orders and every stock change.

CREATE TABLE stores (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name       VARCHAR(200)    NOT NULL,
    created_at DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    UNIQUE KEY stores_name (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE products (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    store_id         BIGINT UNSIGNED NOT NULL,
    name             VARCHAR(200)    NOT NULL,
    price_cents      BIGINT          NOT NULL,
    -- units on hand: what is neither sold nor lost; Redis splits it into available + held
    stock            BIGINT          NOT NULL,
    max_per_customer INT             NULL,
    created_at       DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    CONSTRAINT products_store FOREIGN KEY (store_id) REFERENCES stores (id),
    CONSTRAINT products_stock_not_negative CHECK (stock >= 0),
    CONSTRAINT products_price_not_negative CHECK (price_cents >= 0),
    CONSTRAINT products_limit_positive CHECK (max_per_customer IS NULL OR max_per_customer > 0),
    UNIQUE KEY products_store_name (store_id, name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE users (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    email         VARCHAR(254)    NOT NULL,
    password_hash VARCHAR(255)    NOT NULL,
    role          ENUM ('CUSTOMER', 'ADMIN') NOT NULL DEFAULT 'CUSTOMER',
    created_at    DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    UNIQUE KEY users_email (email)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE orders (
    id                CHAR(36)        NOT NULL PRIMARY KEY, -- UUIDv7, time ordered
    user_id           BIGINT UNSIGNED NOT NULL,
    store_id          BIGINT UNSIGNED NOT NULL,
    status            ENUM ('HELD', 'CONFIRMED', 'CANCELLED', 'EXPIRED') NOT NULL,
    total_cents       BIGINT          NOT NULL,
    idempotency_key   VARCHAR(128)    NULL,
    held_until        DATETIME(3)     NULL,
    created_at        DATETIME(3)     NOT NULL,
    confirmed_at      DATETIME(3)     NULL,
    finished_at       DATETIME(3)     NULL,
    payment_reference VARCHAR(128)    NULL,
    -- the state machine's step: 1 = HELD, 2 = a terminal state; an upsert never lowers it
    version           INT UNSIGNED    NOT NULL,
    CONSTRAINT orders_user FOREIGN KEY (user_id) REFERENCES users (id),
    CONSTRAINT orders_store FOREIGN KEY (store_id) REFERENCES stores (id),
    KEY orders_user_created (user_id, created_at, id),
    KEY orders_store_status (store_id, status)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE order_items (
    order_id         CHAR(36)        NOT NULL,
    product_id       BIGINT UNSIGNED NOT NULL,
    quantity         INT             NOT NULL,
    unit_price_cents BIGINT          NOT NULL,
    PRIMARY KEY (order_id, product_id),
    CONSTRAINT order_items_order FOREIGN KEY (order_id) REFERENCES orders (id),
    CONSTRAINT order_items_product FOREIGN KEY (product_id) REFERENCES products (id),
    CONSTRAINT order_items_quantity_positive CHECK (quantity > 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The ledger of every change to products.stock. movement_key makes each change
-- idempotent: a replayed event finds its row already there and changes nothing.
CREATE TABLE stock_movements (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    movement_key VARCHAR(100)    NOT NULL,
    product_id   BIGINT UNSIGNED NOT NULL,
    delta        BIGINT          NOT NULL,
    reason       ENUM ('SALE', 'RESTOCK', 'ADJUSTMENT') NOT NULL,
    order_id     CHAR(36)        NULL,
    note         VARCHAR(500)    NULL,
    created_at   DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    UNIQUE KEY stock_movements_key (movement_key),
    KEY stock_movements_product (product_id, created_at),
    CONSTRAINT stock_movements_product FOREIGN KEY (product_id) REFERENCES products (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
