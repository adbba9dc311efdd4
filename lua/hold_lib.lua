-- hold_lib.lua: helpers shared by every hold script. It is not run alone: the
-- service prepends it to each script body before loading, so a helper is written once
-- and every script still runs as one atomic EVALSHA. Every function defined here is
-- built again on every call, so this file holds only what lock.lua uses too; the helpers
-- of scripts that end holds or give units back (pre-orders, the waitlist, `release`, the
-- order's event) are in release_lib.lua, which follows this file in those scripts only.
--
-- Every script that includes it takes the store's keys first, in this order. The line
-- before this file sets STORE_KEYS, how many it takes: lock.lua takes the first eight,
-- all it uses (each key passed costs a Lua string on every call), every other script
-- all fourteen (src/hold/scripts.rs).
--   KEYS[1] stock      HASH product_id -> available units
--   KEYS[2] held       HASH product_id -> units in HELD holds
--   KEYS[3] bought     HASH "<user>:<product_id>" -> units in the user's HELD + CONFIRMED holds,
--                           and "<user>:holds" -> the user's HELD holds (the hold cap)
--   KEYS[4] deadlines  ZSET order_id -> held_until (ms); the sweeper's index
--   KEYS[5] outbox     STREAM of order and stock events, read by the flusher
--   KEYS[6] backorder  HASH product_id -> units still open for pre-order
--   KEYS[7] bo_held    HASH product_id -> pre-ordered units in HELD holds
--   KEYS[8] terms      HASH "<pid>:max" -> per-customer limit (0 = none),
--                           "<pid>:bo" -> backorder limit; written by the catalog and terms.lua
--   KEYS[9] sold       HASH product_id -> units in CONFIRMED holds
-- Pre-orders (backorders) are counted apart from stock, in backorder, bo_held and:
--   KEYS[10] bo_sold      HASH product_id -> pre-ordered units in CONFIRMED holds, not yet filled
--   KEYS[11] bo_queue     ZSET (all scores 0) "<pid>:<created ms, 13 digits>:<order>": confirmed
--                              pre-orders waiting for stock, oldest first by ZRANGEBYLEX
--   KEYS[12] bo_open      HASH "<order>:<pid>" -> that order's units still waiting for stock
-- Per product: backorder + bo_held + bo_sold == terms[<pid>:bo].
-- The waitlist (customers waiting for returning units):
--   KEYS[13] wl_queue     ZSET (all scores 0) "<pid>:<seq, 12 digits>:<user>", first come
--                              first served per product by ZRANGEBYLEX
--   KEYS[14] wl_entry     HASH "<pid>:<user>" -> "<seq>:<quantity>:<deadline ms>:<unit price>",
--                              "<pid>:<user>:skip" -> why the entry was last passed over
--                              (LIMIT or HOLD_CAP), "@<user>" -> "<pid>,..." the products
--                              the user waits for, in join order, "#seq" -> the join counter
--   and KEYS[13] .. ':deadlines', ZSET wl_queue member -> deadline ms (see wl_deadlines)
-- A script's own keys follow from KEYS[STORE_KEYS + 1].
-- All of them carry the store's hash tag, so a script touches one cluster slot.
-- The store's live channel is named after KEYS[1] ("...:stock" -> "...:live"), so it
-- carries the same hash tag without taking a KEYS slot (docs/LIVE.md).
--
-- A hold is a HASH with fields: user, lines ("pid:qty:unit_price[:backordered],..."
-- where the 4th part, present only when > 0, is how many of the line's units are a
-- pre-order), total, status, created, held_until, confirmed, finished, payment_ref,
-- confirmed_by, idem (only when the customer sent an idempotency key), version (1 while
-- HELD, 2 once terminal), and waitlist ('1' on a hold handed over from the waitlist).
-- Its store is the one its key names. Times are Unix milliseconds from Redis TIME.
-- Holds and outbox entries written by earlier releases may also carry `store` and an
-- empty `idem`; every reader ignores both.

local store = {
  stock = KEYS[1], held = KEYS[2], bought = KEYS[3], deadlines = KEYS[4],
  outbox = KEYS[5], backorder = KEYS[6], bo_held = KEYS[7], terms = KEYS[8],
  live = string.sub(KEYS[1], 1, -6) .. 'live',
}
if STORE_KEYS > 8 then
  store.sold, store.bo_sold, store.bo_queue = KEYS[9], KEYS[10], KEYS[11]
  store.bo_open, store.wl_queue, store.wl_entry = KEYS[12], KEYS[13], KEYS[14]
end

-- Redis's clock, never the app's: every instance agrees on when a hold is due.
-- Returns the time in ms and its digits: TIME's seconds followed by the first three of
-- its microseconds, zero-padded (built from strings: formatting a number is dear).
local function now_ms()
  local t = redis.call('TIME')
  local digits = t[1] .. string.sub('00000' .. t[2], -6, -4)
  return tonumber(digits), digits
end

-- Integers as plain digits: Lua's default number format switches to 1e+14 notation.
local function int(n)
  return string.format('%d', n)
end

-- The field of `bought` that counts a customer's HELD holds in this store.
local function holds_field(user)
  return user .. ':holds'
end

-- The store's sequence, one more for every outbox event and carried in it as `seq`; MySQL
-- keeps the highest it has flushed, so a Redis whose sequence is behind went back in time.
-- The key is the outbox key plus ':seq' (same hash tag, so the same slot), derived here
-- so that no script's KEYS change.
local function next_seq()
  return int(redis.call('INCR', store.outbox .. ':seq'))
end

-- One line as a hold stores it: the pre-ordered part only when there is one. `qty` and
-- `price` are numbers or their digits as received (kept as they are).
local function encode_line(pid, qty, price, bo)
  if type(price) == 'number' then
    price = int(price)
  end
  local line = pid .. ':' .. qty .. ':' .. price
  if bo > 0 then
    line = line .. ':' .. bo
  end
  return line
end

-- Tells live subscribers what changed, in the same atomic step as the change. One
-- message of space-separated words (docs/LIVE.md):
--   <order id> <user id> <order status> <product>=<available> ...
-- with '-' for the first three when no order changed (a restock or a snapshot).
-- PUBLISH reaches every node of a cluster; SPUBLISH is the sharded, slot-local form.
-- `available`, when given, is each product's availability as the script left it (a
-- script that just wrote it knows it); otherwise it is read.
local function publish_change(order_id, user, status, pids, available)
  local words = { order_id, user, status }
  if #pids > 0 then
    available = available or redis.call('HMGET', store.stock, unpack(pids))
    for i = 1, #pids do
      if available[i] then
        words[#words + 1] = pids[i] .. '=' .. available[i]
      end
    end
  end
  redis.call('PUBLISH', store.live, table.concat(words, ' '))
end

