-- release_lib.lua: the helpers of scripts that end holds, give units back or hand them
-- over: the hold's counters and event, pre-orders, the waitlist and `release`. It is not
-- run alone: the service prepends hold_lib.lua and then this file to the bodies that need
-- them (cancel, confirm, expire, restock, waitlist; src/hold/scripts.rs), so lock.lua, the
-- hottest script, does not build these functions on every call. Its KEYS are
-- hold_lib.lua's store keys.

-- ---------------------------------------------------------------------------------
-- Holds that end or change: counters, lines and the order's event

-- HINCRBY that skips a zero step: Lua's -0 reaches Redis as "-0", which is no integer.
local function incr(key, field, by)
  if by ~= 0 then
    redis.call('HINCRBY', key, field, by)
  end
end

-- A HELD hold of `user` ended (confirmed or released): its slot under the cap is free.
local function end_hold(user)
  local field = holds_field(user)
  if redis.call('HINCRBY', store.bought, field, -1) <= 0 then
    redis.call('HDEL', store.bought, field)
  end
end

-- Calls fn(pid, quantity, unit_price, backordered) for each line of a hold.
local function each_line(lines, fn)
  for pid, qty, price, bo in string.gmatch(lines, '(%d+):(%d+):(%d+):?(%d*)') do
    fn(pid, tonumber(qty), tonumber(price), tonumber(bo) or 0)
  end
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

-- ---------------------------------------------------------------------------------
-- Pre-orders (backorders)

-- The queue member of a confirmed pre-order: sorts by product, then by age.
local function bo_member(pid, created, order_id)
  return pid .. ':' .. string.format('%013d', tonumber(created)) .. ':' .. order_id
end

-- A hold's pre-ordered units move from held to confirmed and join the product's queue.
local function confirm_backorder(order_id, created, pid, bo)
  redis.call('HINCRBY', store.bo_held, pid, -bo)
  redis.call('HINCRBY', store.bo_sold, pid, bo)
  redis.call('ZADD', store.bo_queue, 0, bo_member(pid, created, order_id))
  redis.call('HSET', store.bo_open, order_id .. ':' .. pid, bo)
end

-- Rewrites one line's pre-ordered part in a hold the store still keeps.
local function set_line_backordered(hold_key, pid, bo)
  local lines = redis.call('HGET', hold_key, 'lines')
  if not lines then
    return
  end
  local out = {}
  each_line(lines, function(p, qty, price, old)
    out[#out + 1] = encode_line(p, qty, price, p == pid and bo or old)
  end)
  redis.call('HSET', hold_key, 'lines', table.concat(out, ','))
end

-- Gives up to `units` new units of `pid` to its confirmed pre-orders, oldest first.
-- Each filled order gets a 'backorder_filled' event. Returns the units used.
-- `hold_key_of(order_id)` names an order's hold key (in this store's slot).
local function fill_backorders(pid, units, restock_id, now, hold_key_of)
  local used = 0
  local waiting = redis.call('ZRANGEBYLEX', store.bo_queue, '[' .. pid .. ':', '[' .. pid .. ':~')
  for _, member in ipairs(waiting) do
    if used >= units then
      break
    end
    local order_id = string.match(member, '^%d+:%d+:(.+)$')
    local open_field = order_id .. ':' .. pid
    local open = tonumber(redis.call('HGET', store.bo_open, open_field) or '0')
    local fill = math.min(open, units - used)
    if fill > 0 then
      used = used + fill
      redis.call('HINCRBY', store.bo_sold, pid, -fill)
      redis.call('HINCRBY', store.backorder, pid, fill)
      redis.call('HINCRBY', store.sold, pid, fill)
      set_line_backordered(hold_key_of(order_id), pid, open - fill)
      redis.call('XADD', store.outbox, '*', 'type', 'backorder_filled', 'order', order_id,
        'seq', next_seq(), 'product', pid, 'units', fill, 'restock', restock_id, 'at', int(now))
    end
    if open - fill <= 0 then
      redis.call('HDEL', store.bo_open, open_field)
      redis.call('ZREM', store.bo_queue, member)
    else
      redis.call('HSET', store.bo_open, open_field, open - fill)
    end
  end
  return used
end
-- ---------------------------------------------------------------------------------
-- Waitlist hand-over. Every script that may release units (cancel, confirm, expire,
-- restock) calls `read_waitlist(i)` before writing anything; `release` refuses to run
-- without it, so no path can give units back without handing them to the line first.
-- `release` and restock.lua then hand what came back to the head of the product's
-- waitlist before the script ends, so no other buyer ever sees it.
-- ARGV[i] hold TTL (ms)  ARGV[i+1] hold cap (0 = none)
-- ARGV[i+2] prefix of the store's hold keys
-- ARGV[i+3] a fresh order id (a UUIDv7) for the first hand-over. Lua cannot make UUIDs:
--           the n-th hand-over's id is this one with n - 1 added to its last 8 hex digits
--           (modulo 2^32). Those digits are random in a UUIDv7, and the 42-bit counter
--           before them differs between ids made in the same millisecond, so the ids of
--           two calls never meet.
local waitlist = nil

-- Most hand-overs one script makes: each is a new hold (about 15 commands), and a script
-- blocks Redis while it runs. Units beyond them go on sale.
local MAX_HANDOVERS = 1000

local function read_waitlist(i)
  local head, tail = string.match(ARGV[i + 3] or '',
    '^(%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x)(%x%x%x%x%x%x%x%x)$')
  if not head then
    error('the waitlist hand-over needs a fresh order id, got ' .. tostring(ARGV[i + 3]))
  end
  waitlist = {
    hold_ttl = tonumber(ARGV[i]), cap = tonumber(ARGV[i + 1]),
    prefix = ARGV[i + 2], id_head = head, id_tail = tonumber(tail, 16), made = 0,
  }
end

-- The order id of the next hand-over (see ARGV[i+4] above).
local function next_handover_id()
  local n = waitlist.made
  waitlist.made = n + 1
  return waitlist.id_head .. string.format('%08x', (waitlist.id_tail + n) % 4294967296)
end

-- The line's deadline index: ZSET wl_queue member -> the entry's deadline (ms). Its name
-- is derived from KEYS[13] like the sequence key's from the outbox (same hash tag, so the
-- same slot, and no script's KEYS change). Expired entries are found by score, so the
-- line never has to be walked to count who is ahead (waitlist.lua).
local wl_deadlines = store.wl_queue .. ':deadlines'

-- Adds `pid` to, or takes it from, the products `user` waits for (wl_entry's "@<user>"),
-- so that myWaitlist reads one field instead of searching the whole hash.
local function list_entry(user, pid, waiting)
  local field = '@' .. user
  local kept = {}
  for other in string.gmatch(redis.call('HGET', store.wl_entry, field) or '', '%d+') do
    if other ~= pid then
      kept[#kept + 1] = other
    end
  end
  if waiting then
    kept[#kept + 1] = pid
  end
  if #kept == 0 then
    redis.call('HDEL', store.wl_entry, field)
  else
    redis.call('HSET', store.wl_entry, field, table.concat(kept, ','))
  end
end

local function drop_entry(member, field)
  redis.call('ZREM', store.wl_queue, member)
  redis.call('ZREM', wl_deadlines, member)
  redis.call('HDEL', store.wl_entry, field, field .. ':skip')
  local pid, user = string.match(field, '^(%d+):(%d+)$')
  list_entry(user, pid, false)
end

-- Drops every entry of the store whose deadline has passed.
local function drop_expired_entries(now)
  while true do
    local due = redis.call('ZRANGEBYSCORE', wl_deadlines, '-inf', int(now), 'LIMIT', 0, 100)
    if #due == 0 then
      return
    end
    for _, member in ipairs(due) do
      local pid, seq, user = string.match(member, '^(%d+):(%d+):(%d+)$')
      local field = pid .. ':' .. user
      local entry = redis.call('HGET', store.wl_entry, field)
      if entry and tonumber(string.match(entry, '^(%d+):')) == tonumber(seq) then
        drop_entry(member, field)
      else
        -- Only the index still names an entry that is gone: never touch a newer one.
        redis.call('ZREM', wl_deadlines, member)
        redis.call('ZREM', store.wl_queue, member)
      end
    end
  end
end

-- A HELD order of `qty` units of `pid` for `user`, made from a waitlist entry.
-- The price is the one the customer joined at.
local function hold_for_waiter(user, pid, qty, price, now)
  local order_id = next_handover_id()
  local held_until = now + waitlist.hold_ttl
  local hold_key = waitlist.prefix .. order_id
  local fields = {
    'user', user, 'lines', encode_line(pid, qty, price, 0),
    'total', int(qty * price), 'status', 'HELD', 'created', int(now),
    'held_until', int(held_until), 'version', 1, 'waitlist', '1',
  }
  incr(store.stock, pid, -qty)
  incr(store.held, pid, qty)
  redis.call('HINCRBY', store.bought, user .. ':' .. pid, qty)
  redis.call('HINCRBY', store.bought, holds_field(user), 1)
  redis.call('HSET', hold_key, unpack(fields))
  redis.call('SET', hold_key .. ':ttl', '1', 'PX', waitlist.hold_ttl)
  redis.call('ZADD', store.deadlines, held_until, order_id)
  append_order_event(order_id, hold_key)
  -- Live subscribers see the hand-over as they see any new hold (lock.lua).
  publish_change(order_id, user, 'HELD', { pid })
end

-- Hands available units of `pid` to its waitlist, first come first served: the first
-- entry they can fill whole gets them (the head keeps its place when they cannot).
-- Expired entries leave as they are met; an entry whose customer is at a limit is
-- passed over and told why.
local function feed_waitlist(pid, now)
  local available = tonumber(redis.call('HGET', store.stock, pid) or '0')
  if available <= 0 then
    return
  end
  local limit = tonumber(redis.call('HGET', store.terms, pid .. ':max') or '0')
  -- Read in pages, from just after the last member seen: a long line costs only what
  -- the hand-over needs, and the entries dropped on the way do not shift the next page.
  local from, to = '[' .. pid .. ':', '[' .. pid .. ':~'
  while true do
    local members = redis.call('ZRANGEBYLEX', store.wl_queue, from, to, 'LIMIT', 0, 100)
    if #members == 0 then
      return
    end
    for _, member in ipairs(members) do
      if available <= 0 or waitlist.made >= MAX_HANDOVERS then
        return
      end
      local user = string.match(member, '^%d+:%d+:(%d+)$')
      local field = pid .. ':' .. user
      local entry = redis.call('HGET', store.wl_entry, field)
      local qty, deadline, price
      if entry then
        qty, deadline, price = string.match(entry, '^%d+:(%d+):(%d+):(%d+)$')
        qty, deadline, price = tonumber(qty), tonumber(deadline), tonumber(price)
      end
      if not entry or now >= deadline then
        drop_entry(member, field)
      elseif qty <= available then
        local bought = tonumber(redis.call('HGET', store.bought, field) or '0')
        local holds = tonumber(redis.call('HGET', store.bought, holds_field(user)) or '0')
        if limit > 0 and bought + qty > limit then
          redis.call('HSET', store.wl_entry, field .. ':skip', 'LIMIT')
        elseif waitlist.cap > 0 and holds >= waitlist.cap then
          redis.call('HSET', store.wl_entry, field .. ':skip', 'HOLD_CAP')
        else
          hold_for_waiter(user, pid, qty, price, now)
          drop_entry(member, field)
          available = available - qty
        end
      end
    end
    from = '(' .. members[#members]
  end
end
-- ---------------------------------------------------------------------------------

-- Moves a HELD hold to a terminal status and gives every unit back to the sale (or to
-- pre-order capacity).
-- Callers check that the hold is HELD; this is the only place stock returns from a hold.
local function release(order_id, hold_key, status, now, retention_ms)
  if not waitlist then
    error('release without the waitlist hand-over settings: call read_waitlist first')
  end
  local user = redis.call('HGET', hold_key, 'user')
  local pids = {}
  each_line(redis.call('HGET', hold_key, 'lines'), function(pid, qty, _, bo)
    pids[#pids + 1] = pid
    -- In-stock units go back to the sale, pre-ordered ones back to pre-order capacity.
    incr(store.stock, pid, qty - bo)
    incr(store.held, pid, -(qty - bo))
    if bo > 0 then
      redis.call('HINCRBY', store.backorder, pid, bo)
      redis.call('HINCRBY', store.bo_held, pid, -bo)
    end
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
  -- Last: the released order's event goes first, then the hand-overs it made possible.
  each_line(redis.call('HGET', hold_key, 'lines'), function(pid)
    feed_waitlist(pid, now)
  end)
end
