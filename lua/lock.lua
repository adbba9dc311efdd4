-- lock.lua: checks and holds every line of one order, all or nothing.
-- Runs after hold_lib.lua (KEYS[1..STORE_KEYS] are the store's keys described there).
-- It takes only the first eight, all it uses: STORE_KEYS = 8.
--
-- KEYS[S+1]  hold:<order>        the hold to create          (S = STORE_KEYS)
-- KEYS[S+2]  hold:<order>:ttl    marker whose expiry signals the hold is due
-- KEYS[S+3]  idem:<user>:<key>   optional; present only when the client sent a key
-- ARGV[1]  order id            ARGV[2] user id
-- ARGV[3]  hold TTL (ms)       ARGV[4] idempotency retention (ms)
-- ARGV[5]  idempotency key as sent ('' when none)
-- ARGV[6]  most HELD holds the customer may have in this store (0 = no cap)
-- ARGV[7]  the request's fingerprint: its normalised lines and options, no spaces;
--          '' when no idempotency key was sent (it is stored with the key only)
-- ARGV[8]  '1' when the customer accepts a pre-order for what stock cannot fill, else '0'
-- ARGV[9]  n, the number of lines; then n groups of 3 from ARGV[10]:
--          product id, quantity (> 0), unit price (cents)
-- The store is the one the keys name: the hold does not repeat it.
-- Product ids are distinct (the caller sums duplicate lines). The per-customer limit is
-- read from the store's terms hash, so an ADMIN's change applies to the next request.
--
-- The idempotency key stores "<order id> <fingerprint>", so a key reused for another
-- request is told apart from a retry.
--
-- Replies, nothing written unless the first is HELD:
--   {'HELD', created_ms, held_until_ms, pid, backordered, ...}
--                                   with a pair for each line that is partly a pre-order
--   {'EXISTING', order_id}          the idempotency key already names this request's order
--   {'REUSED', order_id}            the key names an order made from other lines or options
--   {'TOO_MANY_HOLDS', cap}         the customer already has `cap` HELD holds here
--   {'UNKNOWN', pid, ...}           no stock or terms entry in Redis yet: initialise and retry
--   {'LIMIT', pid, allowed, ...}    the customer may take only `allowed` more units
--   {'SHORT', pid, available, ...}  one pair per line that cannot be filled; `available`
--                                   counts open pre-order units too when they were allowed

local hold_key, marker_key = KEYS[STORE_KEYS + 1], KEYS[STORE_KEYS + 2]
local idem_key = KEYS[STORE_KEYS + 3]
local order_id, user = ARGV[1], ARGV[2]
-- Numbers that only pass through to Redis stay the digits they came as: a Lua number
-- handed to redis.call is formatted with snprintf, about the price of a HINCRBY.
local hold_ttl_ms, idem_ttl_ms, idem = ARGV[3], ARGV[4], ARGV[5]
local cap, fingerprint = ARGV[6], ARGV[7]

if idem_key then
  local existing = redis.call('GET', idem_key)
  if existing then
    local named, fingerprint_then = string.match(existing, '^(%S+) (%S+)$')
    if not named then
      return { 'EXISTING', existing } -- written before keys carried a fingerprint
    end
    if fingerprint_then == fingerprint then
      return { 'EXISTING', named }
    end
    return { 'REUSED', named }
  end
end

-- Checked here, in the script, so that parallel requests and aliases cannot all pass it.
if cap ~= '0' then
  cap = tonumber(cap)
  if tonumber(redis.call('HGET', store.bought, holds_field(user)) or '0') >= cap then
    return { 'TOO_MANY_HOLDS', cap }
  end
end

local allow_backorder = ARGV[8] == '1'
local n = tonumber(ARGV[9])
local pids, qtys, qty_digits, price_digits, limit_fields = {}, {}, {}, {}, {}
for i = 1, n do
  local base = 10 + (i - 1) * 3
  pids[i] = ARGV[base]
  qty_digits[i] = ARGV[base + 1]
  qtys[i] = tonumber(qty_digits[i])
  price_digits[i] = ARGV[base + 2]
  limit_fields[i] = pids[i] .. ':max'
end

local available = redis.call('HMGET', store.stock, unpack(pids))
local limits = redis.call('HMGET', store.terms, unpack(limit_fields))
local unknown = {}
for i = 1, n do
  if not available[i] or not limits[i] then
    unknown[#unknown + 1] = pids[i]
  end
  limits[i] = limits[i] == '0' and 0 or tonumber(limits[i] or '0')
end
if #unknown > 0 then
  return { 'UNKNOWN', unpack(unknown) }
end

-- What the customer already has of every limited line, in one read.
local limited, bought_fields = {}, {}
for i = 1, n do
  if limits[i] > 0 then
    limited[#limited + 1] = i
    bought_fields[#bought_fields + 1] = user .. ':' .. pids[i]
  end
end
local over = {}
if #limited > 0 then
  local had = redis.call('HMGET', store.bought, unpack(bought_fields))
  for j, i in ipairs(limited) do
    local units = tonumber(had[j] or '0')
    if units + qtys[i] > limits[i] then
      over[#over + 1] = pids[i]
      over[#over + 1] = math.max(limits[i] - units, 0)
    end
  end
end
if #over > 0 then
  return { 'LIMIT', unpack(over) }
end

-- What stock cannot fill comes from pre-order capacity, when the customer accepts it.
local short, backordered = {}, {}
for i = 1, n do
  local left = tonumber(available[i])
  available[i] = left
  backordered[i] = 0
  if left < qtys[i] then
    local open = 0
    if allow_backorder then
      open = tonumber(redis.call('HGET', store.backorder, pids[i]) or '0')
    end
    if left + open >= qtys[i] then
      backordered[i] = qtys[i] - left
    else
      short[#short + 1] = pids[i]
      short[#short + 1] = left + open
    end
  end
end
if #short > 0 then
  return { 'SHORT', unpack(short) }
end

local now, created = now_ms()
local held_until = now + tonumber(hold_ttl_ms)
local lines, total, left_after = {}, 0, {}
for i = 1, n do
  local in_stock, bo = qtys[i] - backordered[i], backordered[i]
  if in_stock > 0 then
    local units = bo == 0 and qty_digits[i] or int(in_stock)
    left_after[i] = int(redis.call('HINCRBY', store.stock, pids[i], '-' .. units))
    redis.call('HINCRBY', store.held, pids[i], units)
  else
    left_after[i] = int(available[i])
  end
  if bo > 0 then
    redis.call('HINCRBY', store.backorder, pids[i], -bo)
    redis.call('HINCRBY', store.bo_held, pids[i], bo)
  end
  redis.call('HINCRBY', store.bought, user .. ':' .. pids[i], qty_digits[i])
  lines[i] = encode_line(pids[i], qty_digits[i], price_digits[i], bo)
  total = total + qtys[i] * tonumber(price_digits[i])
end
redis.call('HINCRBY', store.bought, holds_field(user), '1')

local held_until_digits = int(held_until)
local fields = {
  'user', user, 'lines', table.concat(lines, ','),
  'total', int(total), 'status', 'HELD', 'created', created,
  'held_until', held_until_digits, 'version', '1',
}
if idem ~= '' then
  fields[#fields + 1] = 'idem'
  fields[#fields + 1] = idem
end
redis.call('HSET', hold_key, unpack(fields))
redis.call('SET', marker_key, '1', 'PX', hold_ttl_ms)
redis.call('ZADD', store.deadlines, held_until_digits, order_id)
if idem_key then
  redis.call('SET', idem_key, order_id .. ' ' .. fingerprint, 'PX', idem_ttl_ms)
end
-- The hold was just written from `fields`: append them as they are instead of reading
-- the hash back (this is the hottest script).
redis.call('XADD', store.outbox, '*', 'type', 'order', 'order', order_id, 'seq', next_seq(),
  unpack(fields))
publish_change(order_id, user, 'HELD', pids, left_after)
local reply = { 'HELD', now, held_until }
for i = 1, n do
  if backordered[i] > 0 then
    reply[#reply + 1] = pids[i]
    reply[#reply + 1] = backordered[i]
  end
end
return reply
