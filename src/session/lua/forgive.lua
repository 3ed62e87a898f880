-- Takes one count back from a failure counter (an attempt counted in advance that was not a
-- failure). KEYS[1] the counter. Never below zero; a missing counter stays missing.
local n = tonumber(redis.call('HGET', KEYS[1], 'n'))
if n and n > 0 then
  return redis.call('HINCRBY', KEYS[1], 'n', -1)
end
return 0
