-- Rotates a refresh token (and says so on the channel, for the local caches).
-- KEYS[1] the user's key
-- ARGV: now, sid, hash of the presented token, hash of its successor, grace, refresh ttl,
--       max lifetime (0: none), tombstone ttl, channel, sid prefix; times and durations in ms
-- Returns {code, old expiry, record}: 0 invalid (no record), 1 rotated, 2 grace (same
-- successor), 3 theft (the parent after the grace: ended here), 4 unmatched (neither current
-- nor parent: the caller tells an older token from a forgery), 5 grace but the successor
-- differs (a changed refresh key); then {record, ...} of the lapsed sessions dropped (LAPSED).
local now, s, presented, nexth = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local grace, ttl, life, tomb = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]),
  tonumber(ARGV[8])
local list = load(KEYS[1])
local i = find(list, s)
if not i then return {0, 0, '', LAPSED} end
local e = list[i]
if not live(e, now) then return {0, 0, '', LAPSED} end
local cur, par, gen = string.sub(e, CUR, CUR + 15), string.sub(e, PAR, PAR + 15), u32(e, GEN)
local old = u48(e, EXPIRES)
if cur == presented then
  local exp = now + ttl
  if life > 0 then
    local cap = u48(e, CREATED) + life
    if cap < exp then exp = cap end
  end
  if exp <= now then return {0, 0, '', LAPSED} end
  e = setb(e, PAR, cur)
  e = setb(e, CUR, nexth)
  e = set48(e, ROTATED, now)
  e = set32(e, GEN, gen + 1)
  e = set48(e, SEEN, now)
  e = set48(e, EXPIRES, exp)
  list[i] = e
  save(KEYS[1], list, now)
  -- Its expiry moved: the other instances' local caches forget it ('~': not an end).
  redis.call('PUBLISH', ARGV[9], '~' .. ARGV[10] .. s)
  return {1, old, e, LAPSED}
end
if gen > 0 and par == presented then
  -- The grace is the bound, to the millisecond: honoured at exactly `grace` after the
  -- rotation, theft a millisecond later (as in memory.rs).
  if now - u48(e, ROTATED) > grace then
    finish(list, i, 4, now, tomb, ARGV[9], ARGV[10])
    save(KEYS[1], list, now)
    return {3, old, list[i], LAPSED}
  end
  if cur ~= nexth then return {5, old, e, LAPSED} end
  return {2, old, e, LAPSED}
end
return {4, old, e, LAPSED}
