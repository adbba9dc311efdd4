-- terms.lua: an ADMIN changes what the lock script enforces for a product: its
-- per-customer limit and its backorder limit. Pre-order capacity moves with the limit,
-- so that backorder + bo_held + bo_sold == the limit still holds.
-- Runs after hold_lib.lua (KEYS[1..STORE_KEYS] are the store's keys described there).
--
-- ARGV[1]  product id
-- ARGV[2]  new per-customer limit ('' = unchanged, '0' = none)
-- ARGV[3]  new backorder limit ('' = unchanged)
--
-- Replies, nothing written unless the first is UPDATED:
--   {'UPDATED'}
--   {'UNKNOWN'}                   no stock or terms entry in Redis yet: initialise and retry
--   {'BELOW_BACKORDERED', units}  `units` are pre-ordered already (held or confirmed)

local pid, max_per_customer, backorder_limit = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HEXISTS', store.stock, pid) == 0
  or redis.call('HEXISTS', store.terms, pid .. ':bo') == 0 then
  return { 'UNKNOWN' }
end
if backorder_limit ~= '' then
  local limit = tonumber(backorder_limit)
  local used = tonumber(redis.call('HGET', store.bo_held, pid) or '0')
    + tonumber(redis.call('HGET', store.bo_sold, pid) or '0')
  if limit < used then
    return { 'BELOW_BACKORDERED', used }
  end
  redis.call('HSET', store.backorder, pid, limit - used)
  redis.call('HSET', store.terms, pid .. ':bo', limit)
end
if max_per_customer ~= '' then
  redis.call('HSET', store.terms, pid .. ':max', max_per_customer)
end
return { 'UPDATED' }
