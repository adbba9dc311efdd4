-- The MySQL row-lock baseline of scripts/bench: the smallest schema the usual fix for
-- overselling needs (lock the product rows, check and take stock, record the order).
-- Created in a scratch database of its own and dropped afterwards.
CREATE TABLE products (
    id          BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    stock       BIGINT          NOT NULL,
    price_cents BIGINT          NOT NULL
) ENGINE = InnoDB;

CREATE TABLE orders (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id     BIGINT UNSIGNED NOT NULL,
    product_id  BIGINT UNSIGNED NOT NULL,
    quantity    INT             NOT NULL,
    total_cents BIGINT          NOT NULL,
    status      ENUM ('HELD', 'CONFIRMED', 'CANCELLED', 'EXPIRED') NOT NULL,
    held_until  DATETIME(3)     NOT NULL,
    created_at  DATETIME(3)     NOT NULL
) ENGINE = InnoDB;

-- Each transaction's start and time from its first statement to after COMMIT, written
-- after the row lock is released (MEMORY: no log flush), so recording it does not slow
-- the lock. Throughput is counted from these rows, not from the client's own timing.
CREATE TABLE latencies (
    started DATETIME(6) NOT NULL,
    us      BIGINT      NOT NULL
) ENGINE = MEMORY;

-- As much stock as flashstock's benchmark product: it never runs out.
INSERT INTO products (id, stock, price_cents) VALUES (1, 10000000, 1000);
