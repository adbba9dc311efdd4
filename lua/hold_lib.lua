-- hold_lib.lua: helpers shared by every hold script. It is not run alone: the
-- service prepends it to each script body before loading, so a helper is written once
-- and every script still runs as one atomic EVALSHA.
--
-- Every script that includes it takes the store's six keys first, in this order:
--   KEYS[1] stock      HASH product_id -> available units
--   KEYS[2] held       HASH product_id -> units in HELD holds
--   KEYS[3] sold       HASH product_id -> units in CONFIRMED holds
--   KEYS[4] bought     HASH "<user>:<product_id>" -> units in the user's HELD + CONFIRMED holds,
--                           and "<user>:holds" -> the user's HELD holds (the hold cap)
--   KEYS[5] deadlines  ZSET order_id -> held_until (ms); the sweeper's index
--   KEYS[6] outbox     STREAM of order and stock events, read by the flusher
-- All of them carry the store's hash tag, so a script touches one cluster slot.
-- The store's live channel is named after KEYS[1] ("...:stock" -> "...:live"), so it
-- carries the same hash tag without taking a KEYS slot (docs/LIVE.md).
--
-- A hold is a HASH with fields: user, store, lines ("pid:qty:unit_price,..."), total,
-- status, created, held_until, confirmed, finished, payment_ref, confirmed_by, idem,
-- version (1 while HELD, 2 once terminal). Times are Unix milliseconds from Redis TIME.

local store = {
  stock = KEYS[1], held = KEYS[2], sold = KEYS[3],
  bought = KEYS[4], deadlines = KEYS[5], outbox = KEYS[6],
  live = string.sub(KEYS[1], 1, -6) .. 'live',
}

-- Redis's clock, never the app's: every instance agrees on when a hold is due.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integers as plain digits: Lua's default number format switches to 1e+14 notation.
local function int(n)
  return string.format('%d', n)
end

-- The field of `bought` that counts a customer's HELD holds in this store.
local function holds_field(user)
  return user .. ':holds'
end

-- A HELD hold of `user` ended (confirmed or released): its slot under the cap is free.
local function end_hold(user)
  local field = holds_field(user)
  if redis.call('HINCRBY', store.bought, field, -1) <= 0 then
    redis.call('HDEL', store.bought, field)
  end
end

local function each_line(lines, fn)
  for pid, qty, price in string.gmatch(lines, '(%d+):(%d+):(%d+)') do
    fn(pid, tonumber(qty), tonumber(price))
  end
end

-- The store's sequence, one more for every outbox event and carried in it as `seq`; MySQL
-- keeps the highest it has flushed, so a Redis whose sequence is behind went back in time.
-- The key is the outbox key plus ':seq' (same hash tag, so the same slot), derived here
-- so that no script's KEYS change.
local function next_seq()
  return redis.call('INCR', store.outbox .. ':seq')
end

-- Appends the hold's whole current state, so the flusher can upsert it without
-- reading anything else and a replayed or reordered event is harmless.
local function append_order_event(order_id, hold_key)
  local args = { 'XADD', store.outbox, '*', 'type', 'order', 'order', order_id, 'seq', next_seq() }
  local fields = redis.call('HGETALL', hold_key)
  for i = 1, #fields do
    args[#args + 1] = fields[i]
  end
  return redis.call(unpack(args))
end

-- Tells live subscribers what changed, in the same atomic step as the change. One
-- message of space-separated words (docs/LIVE.md):
--   <order id> <user id> <order status> <product>=<available> ...
-- with '-' for the first three when no order changed (a restock or a snapshot).
-- PUBLISH reaches every node of a cluster; SPUBLISH is the sharded, slot-local form.
local function publish_change(order_id, user, status, pids)
  local words = { order_id, user, status }
  if #pids > 0 then
    local available = redis.call('HMGET', store.stock, unpack(pids))
    for i = 1, #pids do
      if available[i] then
        words[#words + 1] = pids[i] .. '=' .. available[i]
      end
    end
  end
  redis.call('PUBLISH', store.live, table.concat(words, ' '))
end

-- Moves a HELD hold to a terminal status and gives every unit back to the sale.
-- Callers check that the hold is HELD; this is the only place stock returns from a hold.
local function release(order_id, hold_key, status, now, retention_ms)
  local user = redis.call('HGET', hold_key, 'user')
  local pids = {}
  each_line(redis.call('HGET', hold_key, 'lines'), function(pid, qty)
    pids[#pids + 1] = pid
    redis.call('HINCRBY', store.stock, pid, qty)
    redis.call('HINCRBY', store.held, pid, -qty)
    local field = user .. ':' .. pid
    if redis.call('HINCRBY', store.bought, field, -qty) <= 0 then
      redis.call('HDEL', store.bought, field)
    end
  end)
  end_hold(user)
  redis.call('HSET', hold_key, 'status', status, 'finished', int(now), 'version', 2)
  redis.call('ZREM', store.deadlines, order_id)
  append_order_event(order_id, hold_key)
  publish_change(order_id, user, status, pids)
  -- After the event: the event must carry the hold's fields whatever the retention.
  redis.call('PEXPIRE', hold_key, retention_ms)
end
