-- outbox_ack.lua: acknowledges outbox entries MySQL has committed and removes them from
-- the stream, so the stream holds only what MySQL does not have yet.
--
-- KEYS[1]  the store's outbox stream
-- ARGV[1]  consumer group      ARGV[2..]  ids of the entries committed, in ascending order
--
-- Replies: the number of entries removed.
--
-- XDEL finds each id by walking the stream node (up to 100 entries) that holds it, which
-- made deleting a committed batch cost Redis more than reading it. Instead the stream is
-- trimmed (XTRIM MINID drops whole nodes) below a floor under which every entry has been
-- delivered to the group and acknowledged:
--   - entries are delivered in id order, so every entry below a delivered one was
--     delivered too (XADD '*' only ever appends above the last id; the group is never
--     moved back with SETID);
--   - below the oldest entry still pending in the group (any consumer's: a claimed or
--     stalled entry, one still being written) nothing is pending, so everything there was
--     acknowledged;
--   - with nothing pending, the same holds up to the group's last delivered id.
-- So the floor is the oldest pending id, or else the group's last delivered id, and only
-- entries MySQL has are trimmed. Not this call's newest id: on a replica promoted behind
-- its master, or a Redis restarted from an older file, the group's history can be behind
-- the ids a flusher committed, and entries it never delivered there would be trimmed
-- unread. The ids of this call at or above the floor (one consumer's batch committed
-- while another's older one is still pending, ids the group's history has not reached)
-- are deleted one by one as before; ascending order lets the script find them from the
-- end without comparing the others.

local stream, group = KEYS[1], ARGV[1]
local n = #ARGV
if n < 2 then
  return 0
end

-- Whether id a is below id b ("<ms>-<seq>"; both parts fit a double exactly).
local function below(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)%-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)%-(%d+)$')
  a_ms, b_ms = tonumber(a_ms), tonumber(b_ms)
  return a_ms < b_ms or (a_ms == b_ms and tonumber(a_seq) < tonumber(b_seq))
end

-- unpack is bounded by Lua's C stack: a long list goes in slices.
local SLICE = 1000
for i = 2, n, SLICE do
  redis.call('XACK', stream, group, unpack(ARGV, i, math.min(i + SLICE - 1, n)))
end

-- The group's last delivered id, from XINFO GROUPS (one flat field list per group).
local function last_delivered()
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local fields = {}
    for i = 1, #info, 2 do
      fields[info[i]] = info[i + 1]
    end
    if fields['name'] == group then
      return fields['last-delivered-id']
    end
  end
  return '0-0'
end

local pending = redis.call('XPENDING', stream, group)
local floor = pending[1] > 0 and pending[2] or last_delivered()
local removed = redis.call('XTRIM', stream, 'MINID', floor)
-- The ids are in ascending order: those at or above the floor are the last ones.
local first = n + 1
while first > 2 and not below(ARGV[first - 1], floor) do
  first = first - 1
end
for i = first, n, SLICE do
  removed = removed + redis.call('XDEL', stream, unpack(ARGV, i, math.min(i + SLICE - 1, n)))
end
return removed
