-- Who confirmed an order, and a per-user token version for revocation.

-- 'payment:<event id>' for a signed payment notification, '<role>:<user id>' for a
-- confirmOrder call (an ADMIN's manual fix, or a customer in PAYMENT_CONFIRMATION=client).
ALTER TABLE orders ADD COLUMN confirmed_by VARCHAR(160) NULL AFTER payment_reference;

-- Tokens carry the version they were issued under; a higher version here (revokeTokens,
-- logout(allDevices: true), a change of role) makes every older token invalid. Redis keeps
-- the live copy the request path reads; this is the copy that survives Redis.
ALTER TABLE users ADD COLUMN token_version BIGINT UNSIGNED NOT NULL DEFAULT 0 AFTER role;
