-- restock.lua: adds units to a product: confirmed pre-orders are filled first, oldest
-- first, and only the rest becomes available. Records it all in the outbox: the
-- 'restock' event first (so MySQL's stock never dips below zero), then one
-- 'backorder_filled' event per filled order.
-- Runs after hold_lib.lua (KEYS[1..STORE_KEYS] are the store's keys described there).
--
-- ARGV[1]  product id    ARGV[2]  units to add (> 0)
-- ARGV[3]  restock id (unique; makes the ledger row idempotent)
-- ARGV[4]  reason text ('' when none)
-- ARGV[5]  the prefix of the store's hold keys ("<prefix>:{store:<id>}:hold:"); a filled
--          order's hold, while the store keeps it, shows its new pre-ordered count
-- ARGV[6..9] the waitlist hand-over's settings and a fresh order id (see read_waitlist):
--          after the pre-orders, the waitlist is fed before anything becomes available
--
-- Replies:
--   {'RESTOCKED', available_after, units_to_backorders}   (after the waitlist's share)
--   {'UNKNOWN'}    no stock entry in Redis yet: initialise and retry

local pid, units, restock_id, reason = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local hold_prefix = ARGV[5]
read_waitlist(6)
if redis.call('HEXISTS', store.stock, pid) == 0 then
  return { 'UNKNOWN' }
end
local now = now_ms()
redis.call('XADD', store.outbox, '*', 'type', 'restock', 'restock', restock_id, 'seq', next_seq(),
  'product', pid, 'units', units, 'reason', reason, 'at', int(now))
local filled = fill_backorders(pid, units, restock_id, now, function(order_id)
  return hold_prefix .. order_id
end)
incr(store.stock, pid, units - filled)
feed_waitlist(pid, now)
-- After the hand-overs (each published on its own): subscribers' last word is the true
-- number left for everyone else.
publish_change('-', '-', '-', { pid })
local available = tonumber(redis.call('HGET', store.stock, pid))
return { 'RESTOCKED', available, filled }
