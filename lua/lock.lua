-- lock.lua: checks and holds every line of one order, all or nothing.
-- Runs after hold_lib.lua (KEYS[1..6] are the store's keys described there).
--
-- KEYS[7]  hold:<order>        the hold to create
-- KEYS[8]  hold:<order>:ttl    marker whose expiry signals the hold is due
-- KEYS[9]  idem:<user>:<key>   optional; present only when the client sent a key
-- ARGV[1]  order id            ARGV[2] user id       ARGV[3] store id
-- ARGV[4]  hold TTL (ms)       ARGV[5] idempotency retention (ms)
-- ARGV[6]  idempotency key as sent ('' when none)
-- ARGV[7]  most HELD holds the customer may have in this store (0 = no cap)
-- ARGV[8]  the request's fingerprint: its normalised lines and options, no spaces
-- ARGV[9]  n, the number of lines; then n groups of 4 from ARGV[10]:
--          product id, quantity (> 0), unit price (cents), per-customer limit (0 = none)
-- Product ids are distinct (the caller sums duplicate lines).
--
-- The idempotency key stores "<order id> <fingerprint>", so a key reused for another
-- request is told apart from a retry.
--
-- Replies, nothing written unless the first is HELD:
--   {'HELD', created_ms, held_until_ms}
--   {'EXISTING', order_id}          the idempotency key already names this request's order
--   {'REUSED', order_id}            the key names an order made from other lines or options
--   {'TOO_MANY_HOLDS', cap}         the customer already has `cap` HELD holds here
--   {'UNKNOWN', pid, ...}           no stock entry in Redis yet: initialise and retry
--   {'LIMIT', pid, allowed, ...}    the customer may take only `allowed` more units
--   {'SHORT', pid, available, ...}  one pair per line that cannot be filled

local hold_key, marker_key, idem_key = KEYS[7], KEYS[8], KEYS[9]
local order_id, user, store_id = ARGV[1], ARGV[2], ARGV[3]
local hold_ttl_ms, idem_ttl_ms, idem = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local cap, fingerprint = tonumber(ARGV[7]), ARGV[8]

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
if cap > 0 and tonumber(redis.call('HGET', store.bought, holds_field(user)) or '0') >= cap then
  return { 'TOO_MANY_HOLDS', cap }
end

local n = tonumber(ARGV[9])
local pids, qtys, prices, limits = {}, {}, {}, {}
for i = 1, n do
  local base = 10 + (i - 1) * 4
  pids[i] = ARGV[base]
  qtys[i] = tonumber(ARGV[base + 1])
  prices[i] = tonumber(ARGV[base + 2])
  limits[i] = tonumber(ARGV[base + 3])
end

local available = redis.call('HMGET', store.stock, unpack(pids))
local unknown = {}
for i = 1, n do
  if not available[i] then
    unknown[#unknown + 1] = pids[i]
  end
end
if #unknown > 0 then
  return { 'UNKNOWN', unpack(unknown) }
end

local over = {}
for i = 1, n do
  if limits[i] > 0 then
    local had = tonumber(redis.call('HGET', store.bought, user .. ':' .. pids[i]) or '0')
    if had + qtys[i] > limits[i] then
      over[#over + 1] = pids[i]
      over[#over + 1] = math.max(limits[i] - had, 0)
    end
  end
end
if #over > 0 then
  return { 'LIMIT', unpack(over) }
end

local short = {}
for i = 1, n do
  local left = tonumber(available[i])
  if left < qtys[i] then
    short[#short + 1] = pids[i]
    short[#short + 1] = left
  end
end
if #short > 0 then
  return { 'SHORT', unpack(short) }
end

local now = now_ms()
local held_until = now + hold_ttl_ms
local lines, total = {}, 0
for i = 1, n do
  redis.call('HINCRBY', store.stock, pids[i], -qtys[i])
  redis.call('HINCRBY', store.held, pids[i], qtys[i])
  redis.call('HINCRBY', store.bought, user .. ':' .. pids[i], qtys[i])
  lines[i] = pids[i] .. ':' .. qtys[i] .. ':' .. int(prices[i])
  total = total + qtys[i] * prices[i]
end
redis.call('HINCRBY', store.bought, holds_field(user), 1)

local fields = {
  'user', user, 'store', store_id, 'lines', table.concat(lines, ','),
  'total', int(total), 'status', 'HELD', 'created', int(now),
  'held_until', int(held_until), 'idem', idem, 'version', 1,
}
redis.call('HSET', hold_key, unpack(fields))
redis.call('SET', marker_key, '1', 'PX', hold_ttl_ms)
redis.call('ZADD', store.deadlines, held_until, order_id)
if idem_key then
  redis.call('SET', idem_key, order_id .. ' ' .. fingerprint, 'PX', idem_ttl_ms)
end
-- The hold was just written from `fields`: append them as they are instead of reading
-- the hash back (this is the hottest script).
redis.call('XADD', store.outbox, '*', 'type', 'order', 'order', order_id, 'seq', next_seq(),
  unpack(fields))
publish_change(order_id, user, 'HELD', pids)
return { 'HELD', now, held_until }
