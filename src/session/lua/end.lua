-- Ends one active session (ARGV[2] its sid) or all of them (ARGV[2] empty).
-- KEYS[1] the user's key
-- ARGV: now (ms), sid or '', reason code, tombstone ttl (ms), channel, sid prefix,
--       '1' to end only a session that is still active but past its expiry (marking an idle
--       or lifetime expiry once, whichever instance notices it first), else ''
-- Returns {{old expiry, record, ...} of the sessions ended, {record, ...} of the lapsed
-- sessions dropped (LAPSED)}.
local now, s, why, tomb = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local lapsed = ARGV[7] == '1'
local list = load(KEYS[1])
local out = {}
for i, e in ipairs(list) do
  local wanted
  if lapsed then
    wanted = state(e) == 0 and u48(e, EXPIRES) <= now
  else
    wanted = live(e, now)
  end
  if (s == '' or sid(e) == s) and wanted then
    out[#out + 1] = finish(list, i, why, now, tomb, ARGV[5], ARGV[6])
    out[#out + 1] = list[i]
  end
end
if #out > 0 then save(KEYS[1], list, now) end
return {out, LAPSED}
