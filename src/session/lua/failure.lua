-- Counts one failed login in a window that starts at the first failure.
-- KEYS[1] the counter; ARGV: now (ms), window (ms). Returns the failures in the window.
-- Field `e` is the window's end in Unix ms; a counter written before issue 15 holds Unix
-- seconds there, told apart by size (below 10^11: seconds, i.e. before the year 5138; as ms
-- that would be 1973) and read x 1000.
local now, win = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'n', 'e')
local n, e = tonumber(v[1]), tonumber(v[2])
if e and e < 100000000000 then e = e * 1000 end
if not n or not e or e <= now then
  -- Plain integers: newer Redis versions may format a large Lua number as 1e+08.
  redis.call('HSET', KEYS[1], 'n', 1, 'e', string.format('%.0f', now + win))
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', win))
  return 1
end
return redis.call('HINCRBY', KEYS[1], 'n', 1)
