-- Pre-orders: a product may sell up to backorder_limit units beyond its stock. Those
-- units are counted apart from stock, so products.stock keeps its CHECK:
--   backorder_limit == units still open for pre-order (Redis) + backordered
-- where backordered counts confirmed pre-ordered units not yet filled by a restock
-- (held ones live only in Redis until they are confirmed).

ALTER TABLE products
    ADD COLUMN backorder_limit INT NOT NULL DEFAULT 0 AFTER max_per_customer,
    ADD COLUMN backordered     BIGINT NOT NULL DEFAULT 0 AFTER backorder_limit,
    ADD CONSTRAINT products_backorder_limit_not_negative CHECK (backorder_limit >= 0),
    ADD CONSTRAINT products_backordered_in_limit CHECK (backordered >= 0 AND backordered <= backorder_limit);

-- Of a line's quantity, the units still waiting for stock (0 when fully in stock).
ALTER TABLE order_items
    ADD COLUMN backordered_quantity INT NOT NULL DEFAULT 0,
    ADD CONSTRAINT order_items_backordered_in_quantity
        CHECK (backordered_quantity >= 0 AND backordered_quantity <= quantity);

-- A restock hands units to confirmed pre-orders first: each such hand-over is a
-- BACKORDER_FILLED row (a negative delta, like a SALE) next to the restock's row.
ALTER TABLE stock_movements
    MODIFY reason ENUM ('SALE', 'RESTOCK', 'ADJUSTMENT', 'BACKORDER_FILLED') NOT NULL;

-- The ledger of products.backordered, idempotent by movement_key like stock_movements:
-- BACKORDERED when a pre-order is confirmed, FILLED when a restock fills it.
CREATE TABLE backorder_movements (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    movement_key VARCHAR(100)    NOT NULL,
    product_id   BIGINT UNSIGNED NOT NULL,
    delta        BIGINT          NOT NULL,
    reason       ENUM ('BACKORDERED', 'FILLED') NOT NULL,
    order_id     CHAR(36)        NOT NULL,
    note         VARCHAR(500)    NULL,
    created_at   DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    UNIQUE KEY backorder_movements_key (movement_key),
    KEY backorder_movements_product (product_id, created_at),
    CONSTRAINT backorder_movements_product FOREIGN KEY (product_id) REFERENCES products (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Every change an ADMIN makes to a product's terms, with the values before and after.
CREATE TABLE product_changes (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    product_id BIGINT UNSIGNED NOT NULL,
    user_id    BIGINT UNSIGNED NOT NULL,
    field      VARCHAR(40)     NOT NULL,
    old_value  VARCHAR(200)    NULL,
    new_value  VARCHAR(200)    NULL,
    created_at DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    KEY product_changes_product (product_id, created_at),
    CONSTRAINT product_changes_product FOREIGN KEY (product_id) REFERENCES products (id),
    CONSTRAINT product_changes_user FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- An order the service made for the head of a product's waitlist when units came back.
ALTER TABLE orders
    ADD COLUMN from_waitlist BOOLEAN NOT NULL DEFAULT FALSE AFTER version;
