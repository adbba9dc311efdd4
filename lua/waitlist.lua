-- waitlist.lua: a customer joins, leaves or reads the waitlists of one store.
-- Runs after hold_lib.lua (KEYS[1..STORE_KEYS] are the store's keys described there).
--
-- ARGV[1]  'JOIN', 'LEAVE' or 'MINE'    ARGV[2]  user id
-- JOIN:  ARGV[3] product id  ARGV[4] quantity (> 0)  ARGV[5] unit price (cents)
--        ARGV[6] entry lifetime (ms)  ARGV[7] hold cap (0 = none)
-- LEAVE: ARGV[3] product id
-- MINE:  nothing more
--
-- Replies:
--   JOIN  {'JOINED', position} | {'ALREADY', position} | {'NOT_SOLD_OUT', available}
--         | {'LIMIT', allowed} | {'TOO_MANY_HOLDS', cap} | {'UNKNOWN'}
--   LEAVE {'LEFT'} | {'NOT_FOUND'}
--   MINE  {pid, quantity, position, skip reason or '', ...}, one group per entry
-- Positions count only live entries: expired ones ahead are dropped first.

local op, user = ARGV[1], ARGV[2]
local now = now_ms()

-- Drops the product's expired entries; returns the position of `user`'s (or nil).
local function position(pid)
  local members = redis.call('ZRANGEBYLEX', store.wl_queue, '[' .. pid .. ':', '[' .. pid .. ':~')
  local place, found = 0, nil
  for _, member in ipairs(members) do
    local who = string.match(member, '^%d+:%d+:(%d+)$')
    local field = pid .. ':' .. who
    local entry = redis.call('HGET', store.wl_entry, field)
    local deadline = entry and tonumber(string.match(entry, '^%d+:%d+:(%d+):'))
    if not entry or now >= deadline then
      drop_entry(member, field)
    else
      place = place + 1
      if who == user then
        found = place
      end
    end
  end
  return found
end

if op == 'JOIN' then
  local pid, qty, price = ARGV[3], tonumber(ARGV[4]), ARGV[5]
  local ttl_ms, cap = tonumber(ARGV[6]), tonumber(ARGV[7])
  local available = redis.call('HGET', store.stock, pid)
  local limit = redis.call('HGET', store.terms, pid .. ':max')
  if not available or not limit then
    return { 'UNKNOWN' }
  end
  local mine = position(pid)
  if mine then
    return { 'ALREADY', mine }
  end
  if tonumber(available) >= qty then
    return { 'NOT_SOLD_OUT', tonumber(available) }
  end
  limit = tonumber(limit)
  local bought = tonumber(redis.call('HGET', store.bought, user .. ':' .. pid) or '0')
  if limit > 0 and bought + qty > limit then
    return { 'LIMIT', math.max(limit - bought, 0) }
  end
  if cap > 0 and tonumber(redis.call('HGET', store.bought, holds_field(user)) or '0') >= cap then
    return { 'TOO_MANY_HOLDS', cap }
  end
  local seq = redis.call('HINCRBY', store.wl_entry, '#seq', 1)
  local member = pid .. ':' .. string.format('%012d', seq) .. ':' .. user
  redis.call('ZADD', store.wl_queue, 0, member)
  redis.call('HSET', store.wl_entry, pid .. ':' .. user,
    seq .. ':' .. qty .. ':' .. int(now + ttl_ms) .. ':' .. price)
  return { 'JOINED', position(pid) }
end

if op == 'LEAVE' then
  local pid = ARGV[3]
  local field = pid .. ':' .. user
  local entry = redis.call('HGET', store.wl_entry, field)
  if not entry then
    return { 'NOT_FOUND' }
  end
  local seq = string.match(entry, '^(%d+):')
  drop_entry(pid .. ':' .. string.format('%012d', tonumber(seq)) .. ':' .. user, field)
  return { 'LEFT' }
end

if op == 'MINE' then
  local reply = {}
  local fields = redis.call('HKEYS', store.wl_entry)
  for _, field in ipairs(fields) do
    local pid, who = string.match(field, '^(%d+):(%d+)$')
    if who == user then
      local place = position(pid)
      if place then
        local entry = redis.call('HGET', store.wl_entry, field)
        reply[#reply + 1] = pid
        reply[#reply + 1] = string.match(entry, '^%d+:(%d+):')
        reply[#reply + 1] = place
        reply[#reply + 1] = redis.call('HGET', store.wl_entry, field .. ':skip') or ''
      end
    end
  end
  return reply
end

return redis.error_reply('unknown waitlist operation ' .. tostring(op))
