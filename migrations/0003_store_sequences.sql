-- The highest outbox sequence number flushed per store. Every Redis script that appends
-- an outbox event increments its store's sequence and writes it into the event; a Redis
-- whose sequence is below this one has gone back in time (lost writes, an older AOF, a
-- replica promoted before it caught up, or emptied) and is rebuilt from MySQL.
CREATE TABLE store_sequences (
    store_id   BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    seq        BIGINT UNSIGNED NOT NULL,
    updated_at DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    CONSTRAINT store_sequences_store FOREIGN KEY (store_id) REFERENCES stores (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
