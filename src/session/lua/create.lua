-- Creates a session and ends the oldest active ones of the same platform beyond the limit.
-- KEYS[1] the user's key
-- ARGV: now (ms), new record, max per platform (0: none), tombstone ttl (ms), channel,
--       sid prefix, max per user, max tombstones per user
-- Returns {{sid, old expiry, platform, ...} of the sessions ended (reason replaced), oldest
-- first, {record, ...} of the lapsed sessions dropped (LAPSED)}.
local now, new, max = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local tomb, channel, prefix, cap = tonumber(ARGV[4]), ARGV[5], ARGV[6], tonumber(ARGV[7])
local list = load(KEYS[1])
local plat = platform(new)
local function older(a, b)
  local ca, cb = u48(list[a], CREATED), u48(list[b], CREATED)
  if ca ~= cb then return ca < cb end
  return a < b
end
local same = {}
for i, e in ipairs(list) do
  if live(e, now) and platform(e) == plat then same[#same + 1] = i end
end
table.sort(same, older)
local out = {}
local function kick(i)
  out[#out + 1] = sid(list[i])
  out[#out + 1] = finish(list, i, 3, now, tomb, channel, prefix)
  out[#out + 1] = platform(list[i])
end
if max > 0 then
  for j = 1, #same + 1 - max do kick(same[j]) end
end
local all = {}
for i, e in ipairs(list) do
  if live(e, now) then all[#all + 1] = i end
end
table.sort(all, older)
for j = 1, #all + 1 - cap do kick(all[j]) end
-- Forget the oldest tombstones beyond the limit.
local dead = {}
for i, e in ipairs(list) do
  if state(e) ~= 0 and u48(e, EXPIRES) > now then dead[#dead + 1] = i end
end
table.sort(dead, function(a, b)
  local xa, xb = u48(list[a], EXPIRES), u48(list[b], EXPIRES)
  if xa ~= xb then return xa < xb end
  return a < b
end)
local forget = {}
for j = 1, #dead - tonumber(ARGV[8]) do forget[dead[j]] = true end
local kept = {}
for i, e in ipairs(list) do
  if not forget[i] then kept[#kept + 1] = e end
end
kept[#kept + 1] = new
save(KEYS[1], kept, now)
return {out, LAPSED}
