-- Counts one failed login in a window that starts at the first failure.
-- KEYS[1] the counter; ARGV: now, window (seconds). Returns the failures in the window.
local now, win = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'n', 'e')
local n, e = tonumber(v[1]), tonumber(v[2])
if not n or not e or e <= now then
  redis.call('HSET', KEYS[1], 'n', 1, 'e', now + win)
  redis.call('EXPIRE', KEYS[1], win)
  return 1
end
return redis.call('HINCRBY', KEYS[1], 'n', 1)
