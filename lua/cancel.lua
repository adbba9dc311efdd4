-- cancel.lua: HELD -> CANCELLED, units back to the sale at once. A hold already past
-- its deadline expires here instead, exactly as the sweeper would have expired it: the
-- answer must not depend on whether the sweeper got there first.
-- Runs after hold_lib.lua (KEYS[1..STORE_KEYS] are the store's keys described there).
--
-- KEYS[S+1]  hold:<order>    KEYS[S+2]  hold:<order>:ttl     (S = STORE_KEYS)
-- ARGV[1]  order id          ARGV[2]  user id of the caller
-- ARGV[3]  '1' when the caller is an ADMIN (may cancel anyone's hold), else '0'
-- ARGV[4]  retention of a finished hold (ms)
-- ARGV[5..8] the waitlist hand-over's settings and a fresh order id (see read_waitlist)
--
-- Replies:
--   {'CANCELLED'}         released now
--   {'ALREADY'}           cancelled before; nothing changed
--   {'EXPIRED'}           past held_until, released before
--   {'EXPIRED', 'NOW'}    past held_until, released by this call
--   {'NOT_FOUND'}         no such hold, or someone else's and the caller is no ADMIN
--   {'INVALID', status}   CONFIRMED: nothing changed

local hold_key, marker_key = KEYS[STORE_KEYS + 1], KEYS[STORE_KEYS + 2]
local order_id, user, is_admin = ARGV[1], ARGV[2], ARGV[3] == '1'
local retention_ms = tonumber(ARGV[4])
read_waitlist(5)

local status, owner, held_until =
  unpack(redis.call('HMGET', hold_key, 'status', 'user', 'held_until'))
if not status or (owner ~= user and not is_admin) then
  return { 'NOT_FOUND' }
end
if status == 'CANCELLED' then
  return { 'ALREADY' }
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
  return { 'EXPIRED', 'NOW' }
end
release(order_id, hold_key, 'CANCELLED', now, retention_ms)
redis.call('DEL', marker_key)
return { 'CANCELLED' }
