SET @t = NOW(6);
START TRANSACTION;
SELECT id, stock FROM products WHERE id IN (1) ORDER BY id FOR UPDATE;
UPDATE products SET stock = stock - 1 WHERE id = 1 AND stock >= 1;
INSERT INTO orders (user_id, product_id, quantity, total_cents, status, held_until, created_at) VALUES (FLOOR(1 + RAND() * 200), 1, 1, 1000, 'HELD', NOW(3) + INTERVAL 30 MINUTE, NOW(3));
COMMIT;
INSERT INTO latencies (started, us) VALUES (@t, TIMESTAMPDIFF(MICROSECOND, @t, NOW(6)))