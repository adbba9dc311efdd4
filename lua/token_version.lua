-- token_version.lua: raises a user's token version in Redis to what MySQL holds, never
-- lowering it, so two revocations racing each other cannot leave the older number behind.
--
-- KEYS[1]  {user:<id>}:token-version
-- ARGV[1]  the user's token version in MySQL
--
-- Reply: the version Redis holds afterwards (the higher of the two), an integer.

local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
local wanted = tonumber(ARGV[1])
if wanted > current then
  redis.call('SET', KEYS[1], ARGV[1])
  return wanted
end
return current
