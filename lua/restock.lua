-- restock.lua: adds units to a product's available stock and records it in the outbox.
-- Runs after hold_lib.lua (KEYS[1..6] are the store's keys described there).
--
-- ARGV[1]  product id    ARGV[2]  units to add (> 0)
-- ARGV[3]  restock id (unique; makes the ledger row idempotent)
-- ARGV[4]  reason text ('' when none)
--
-- Replies:
--   {'RESTOCKED', available_after}
--   {'UNKNOWN'}    no stock entry in Redis yet: initialise and retry

local pid, units, restock_id, reason = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
if redis.call('HEXISTS', store.stock, pid) == 0 then
  return { 'UNKNOWN' }
end
local available = redis.call('HINCRBY', store.stock, pid, units)
redis.call('XADD', store.outbox, '*', 'type', 'restock', 'restock', restock_id, 'seq', next_seq(),
  'product', pid, 'units', units, 'reason', reason, 'at', int(now_ms()))
publish_change('-', '-', '-', { pid })
return { 'RESTOCKED', available }
