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
--   MINE  {pid, quantity, position, skip reason or '', ...}, one group per entry, in the
--         order the caller joined
-- Positions count only live entries: every expired entry of the store is dropped first
-- (found by deadline, wl_deadlines in hold_lib.lua), so a position is one ZLEXCOUNT over
-- the product's line, however long the line is.

local op, user = ARGV[1], ARGV[2]
local now = now_ms()
drop_expired_entries(now)

-- The line member of the caller's entry for `pid`, or nil when there is none. An expired
-- entry missing from the deadline index is dropped here.
local function member_of(pid)
  local field = pid .. ':' .. user
  local entry = redis.call('HGET', store.wl_entry, field)
  if not entry then
    return nil
  end
  local seq, deadline = string.match(entry, '^(%d+):%d+:(%d+):')
  local member = pid .. ':' .. string.format('%012d', tonumber(seq)) .. ':' .. user
  if now >= tonumber(deadline) then
    drop_entry(member, field)
    return nil
  end
  return member
end

-- 1 for the head of the product's line: the live entries up to and including `member`.
local function position(pid, member)
  return redis.call('ZLEXCOUNT', store.wl_queue, '[' .. pid .. ':', '[' .. member)
end

if op == 'JOIN' then
  local pid, qty, price = ARGV[3], tonumber(ARGV[4]), ARGV[5]
  local ttl_ms, cap = tonumber(ARGV[6]), tonumber(ARGV[7])
  local available = redis.call('HGET', store.stock, pid)
  local limit = redis.call('HGET', store.terms, pid .. ':max')
  if not available or not limit then
    return { 'UNKNOWN' }
  end
  local mine = member_of(pid)
  if mine then
    return { 'ALREADY', position(pid, mine) }
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
  local deadline = now + ttl_ms
  redis.call('ZADD', store.wl_queue, 0, member)
  redis.call('ZADD', wl_deadlines, int(deadline), member)
  redis.call('HSET', store.wl_entry, pid .. ':' .. user,
    seq .. ':' .. qty .. ':' .. int(deadline) .. ':' .. price)
  list_entry(user, pid, true)
  return { 'JOINED', position(pid, member) }
end

if op == 'LEAVE' then
  local pid = ARGV[3]
  local mine = member_of(pid)
  if not mine then
    return { 'NOT_FOUND' }
  end
  drop_entry(mine, pid .. ':' .. user)
  return { 'LEFT' }
end

if op == 'MINE' then
  local reply = {}
  local pids = redis.call('HGET', store.wl_entry, '@' .. user) or ''
  for pid in string.gmatch(pids, '%d+') do
    local member = member_of(pid)
    if member then
      local field = pid .. ':' .. user
      local entry = redis.call('HGET', store.wl_entry, field)
      reply[#reply + 1] = pid
      reply[#reply + 1] = string.match(entry, '^%d+:(%d+):')
      reply[#reply + 1] = position(pid, member)
      reply[#reply + 1] = redis.call('HGET', store.wl_entry, field .. ':skip') or ''
    end
  end
  return reply
end

return redis.error_reply('unknown waitlist operation ' .. tostring(op))
