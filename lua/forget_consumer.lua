-- forget_consumer.lua: removes a departed consumer from the outbox group, but only while
-- it owns no pending entry (XGROUP DELCONSUMER drops a consumer's pending entries with
-- it, and they would never be delivered again). Checking and removing in one script
-- means an entry delivered to it in between cannot be lost.
--
-- KEYS[1]  the store's outbox stream
-- ARGV[1]  consumer group      ARGV[2]  consumer name
--
-- Replies: 1 when the consumer was removed (or was not there), 0 when it owns entries.

local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
