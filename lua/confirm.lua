-- confirm.lua: the payment step. HELD and in time -> CONFIRMED; past its deadline the
-- hold expires here and now, giving its units back. The same script serves a customer's
-- or an ADMIN's confirmOrder and a signed payment notification (`payments::webhook`).
-- Runs after hold_lib.lua (KEYS[1..STORE_KEYS] are the store's keys described there).
-- Pre-ordered units become confirmed pre-orders, queued for the next restock.
--
-- KEYS[S+1]  hold:<order>    KEYS[S+2]  hold:<order>:ttl     (S = STORE_KEYS)
-- KEYS[S+3]  (optional) payment-event:<event id>: the answer this payment event got
-- ARGV[1]  order id
-- ARGV[2]  user id who must own the hold, or '' when anyone's hold may be confirmed
--          (an ADMIN's manual fix, a payment notification)
-- ARGV[3]  payment reference ARGV[4]  retention of a finished hold (ms)
-- ARGV[5]  who confirms, kept as the hold's confirmed_by ('payment:<event>', 'ADMIN:<id>')
-- ARGV[6]  the amount paid in cents, which must equal the hold's total; '' for no check
-- ARGV[7]  how long KEYS[S+3] keeps its answer (ms); unused without KEYS[S+3]
-- ARGV[8..11] the waitlist hand-over's settings and a fresh order id (see read_waitlist):
--          a hold released here because it is past its deadline hands its units to the
--          product's waitlist exactly as the sweeper would have
--
-- Replies:
--   {'CONFIRMED'}                held units are now sold
--   {'ALREADY'}                  confirmed before with the same reference; nothing changed
--   {'EXPIRED'}                  past held_until, released before
--   {'EXPIRED', 'NOW'}           past held_until, released by this call
--   {'NOT_FOUND'}                no such hold, or it belongs to someone else
--   {'AMOUNT_MISMATCH', total}   the amount paid is not the hold's total: nothing changed
--   {'INVALID', status}          any other state: nothing changed
-- With KEYS[S+3], every answer but NOT_FOUND is kept there, and a later call with the same
-- event returns that answer again and changes nothing: the event is processed once, even
-- when two deliveries of it race. A confirmation is kept as {'ALREADY'} and a release
-- made now as plain {'EXPIRED'}: the replay confirms and releases nothing, and says so.

local hold_key, marker_key = KEYS[STORE_KEYS + 1], KEYS[STORE_KEYS + 2]
local event_key = KEYS[STORE_KEYS + 3]
local order_id, user, payment_ref = ARGV[1], ARGV[2], ARGV[3]
local retention_ms, confirmed_by, amount = tonumber(ARGV[4]), ARGV[5], ARGV[6]
read_waitlist(8)

if event_key then
  local answered = redis.call('GET', event_key)
  if answered then
    local reply = {}
    for part in string.gmatch(answered, '%S+') do
      reply[#reply + 1] = part
    end
    return reply
  end
end

local function answer(reply)
  if event_key then
    redis.call('SET', event_key, table.concat(reply, ' '), 'PX', ARGV[7])
  end
  return reply
end

local status, owner, held_until, confirmed_ref, total, created = unpack(redis.call('HMGET',
  hold_key, 'status', 'user', 'held_until', 'payment_ref', 'total', 'created'))
if not status or (user ~= '' and owner ~= user) then
  return { 'NOT_FOUND' }
end
if amount ~= '' and amount ~= total then
  return answer({ 'AMOUNT_MISMATCH', total })
end
if status == 'CONFIRMED' then
  if confirmed_ref == payment_ref then
    return answer({ 'ALREADY' })
  end
  return answer({ 'INVALID', status })
end
if status == 'EXPIRED' then
  return answer({ 'EXPIRED' })
end
if status ~= 'HELD' then
  return answer({ 'INVALID', status })
end

local now = now_ms()
if now >= tonumber(held_until) then
  release(order_id, hold_key, 'EXPIRED', now, retention_ms)
  answer({ 'EXPIRED' })
  return { 'EXPIRED', 'NOW' }
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
  'finished', int(now), 'payment_ref', payment_ref, 'confirmed_by', confirmed_by,
  'version', 2)
redis.call('ZREM', store.deadlines, order_id)
redis.call('DEL', marker_key)
append_order_event(order_id, hold_key)
publish_change(order_id, owner, 'CONFIRMED', {})
redis.call('PEXPIRE', hold_key, retention_ms)
answer({ 'ALREADY' })
return { 'CONFIRMED' }
