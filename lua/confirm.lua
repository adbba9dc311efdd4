-- confirm.lua: the payment step. HELD and in time -> CONFIRMED; past its deadline the
-- hold expires here and now, giving its units back.
-- Runs after hold_lib.lua (KEYS[1..STORE_KEYS] are the store's keys described there).
-- Pre-ordered units become confirmed pre-orders, queued for the next restock.
--
-- KEYS[S+1]  hold:<order>    KEYS[S+2]  hold:<order>:ttl     (S = STORE_KEYS)
-- ARGV[1]  order id          ARGV[2]  user id of the caller (must own the hold)
-- ARGV[3]  payment reference ARGV[4]  retention of a finished hold (ms)
--
-- Replies:
--   {'CONFIRMED'}         held units are now sold
--   {'ALREADY'}           confirmed before with the same reference; nothing changed
--   {'EXPIRED'}           past held_until (released now, or released before)
--   {'NOT_FOUND'}         no such hold, or it belongs to someone else
--   {'INVALID', status}   any other state: nothing changed

local hold_key, marker_key = KEYS[STORE_KEYS + 1], KEYS[STORE_KEYS + 2]
local order_id, user, payment_ref = ARGV[1], ARGV[2], ARGV[3]
local retention_ms = tonumber(ARGV[4])

local status, owner, held_until, confirmed_ref, created = unpack(redis.call('HMGET',
  hold_key, 'status', 'user', 'held_until', 'payment_ref', 'created'))
if not status or owner ~= user then
  return { 'NOT_FOUND' }
end
if status == 'CONFIRMED' then
  if confirmed_ref == payment_ref then
    return { 'ALREADY' }
  end
  return { 'INVALID', status }
end
if status == 'EXPIRED' then
  return { 'EXPIRED' }
end
if status ~= 'HELD' then
  return { 'INVALID', status }
end

local now = now_ms()
if now >= tonumber(held_until) then
  release(order_id, hold_key, 'EXPIRED', now, retention_ms)
  return { 'EXPIRED' }
end

each_line(redis.call('HGET', hold_key, 'lines'), function(pid, qty, _, bo)
  incr(store.held, pid, -(qty - bo))
  incr(store.sold, pid, qty - bo)
  if bo > 0 then
    confirm_backorder(order_id, created, pid, bo)
  end
end)
end_hold(owner)
redis.call('HSET', hold_key, 'status', 'CONFIRMED', 'confirmed', int(now),
  'finished', int(now), 'payment_ref', payment_ref, 'version', 2)
redis.call('ZREM', store.deadlines, order_id)
redis.call('DEL', marker_key)
append_order_event(order_id, hold_key)
redis.call('PEXPIRE', hold_key, retention_ms)
return { 'CONFIRMED' }
