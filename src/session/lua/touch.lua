-- Moves a session's last-seen time forward (a background write, at most once a minute).
-- KEYS[1] the user's key; ARGV: now (ms), sid
-- Returns {record, ...} of the lapsed sessions dropped (LAPSED).
local now, s = tonumber(ARGV[1]), ARGV[2]
local list = load(KEYS[1])
local i = find(list, s)
if not i or not live(list[i], now) or u48(list[i], SEEN) >= now then return LAPSED end
list[i] = set48(list[i], SEEN, now)
save(KEYS[1], list, now)
return LAPSED
