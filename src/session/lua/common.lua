-- authgate session records: helpers shared by every script (prepended to each).
-- One string key per user holds that user's records back to back; the layout is described in
-- src/session/record.rs (offsets there are 0-based, here 1-based). Numbers are little-endian.
-- Times are Unix milliseconds in 48-bit fields (layout 2), always the caller's `now` (ARGV),
-- never Redis's TIME, so tests can pass exact instants. Lua numbers are doubles: exact for
-- integers below 2^53, and 48-bit times stay far below that.
local STATE, VERSION, CREATED, SEEN, ROTATED, EXPIRES, GEN, SID, CUR, PAR, TEXT =
  3, 4, 5, 11, 17, 23, 29, 33, 49, 65, 81
local LAYOUT = 2

local function u16(s, i)
  local a, b = string.byte(s, i, i + 1)
  return a + b * 256
end

local function u32(s, i)
  local a, b, c, d = string.byte(s, i, i + 3)
  return a + b * 256 + c * 65536 + d * 16777216
end

local function u48(s, i)
  return u32(s, i) + u16(s, i + 4) * 4294967296
end

local function bytes_le(n, count)
  local out = {}
  for k = 1, count do
    out[k] = string.char(n % 256)
    n = math.floor(n / 256)
  end
  return table.concat(out)
end

local function set32(e, off, n)
  n = math.floor(n)
  if n < 0 then n = 0 elseif n > 4294967295 then n = 4294967295 end
  return string.sub(e, 1, off - 1) .. bytes_le(n, 4) .. string.sub(e, off + 4)
end

-- A time (ms) into a 48-bit field, saturating like record.rs.
local function set48(e, off, n)
  n = math.floor(n)
  if n < 0 then n = 0 elseif n > 281474976710655 then n = 281474976710655 end
  return string.sub(e, 1, off - 1) .. bytes_le(n, 6) .. string.sub(e, off + 6)
end

-- A number as a plain integer argument: how Redis would format a large double for itself
-- differs between versions (newer ones may write 1e+08, which PX refuses).
local function int(n) return string.format('%.0f', n) end

local function setb(e, off, b)
  return string.sub(e, 1, off - 1) .. b .. string.sub(e, off + #b)
end

local function state(e) return string.byte(e, STATE) end
local function sid(e) return string.sub(e, SID, SID + 15) end
local function platform(e)
  local n = string.byte(e, TEXT)
  return string.sub(e, TEXT + 1, TEXT + n)
end
local function live(e, now) return state(e) == 0 and u48(e, EXPIRES) > now end

-- A layout-1 record (u32 Unix seconds, 72-byte header, written before issue 15) as layout 2:
-- each time x 1000 (cut to its second, so never later than the true time).
-- Same as `upgrade` in record.rs.
-- Its ip (the sixth text field) stays text, behind the kind byte 0 that layout 2 expects.
local function upgrade(e)
  local out = {bytes_le(#e + 9, 2), string.sub(e, STATE, STATE), string.char(LAYOUT)}
  for _, off in ipairs({5, 9, 13, 17}) do
    out[#out + 1] = bytes_le(u32(e, off) * 1000, 6)
  end
  local ip = 73
  for _ = 1, 5 do ip = ip + 1 + string.byte(e, ip) end
  if ip > #e then error('authgate: corrupt session record') end
  out[#out + 1] = string.sub(e, 21, ip - 1)
  out[#out + 1] = string.char(0)
  out[#out + 1] = string.sub(e, ip)
  return table.concat(out)
end

-- The user's records as a list of strings (empty if the key does not exist), all layout 2.
local function load(key)
  local raw = redis.call('GET', key)
  local list = {}
  if not raw then return list end
  local pos, total = 1, #raw
  while pos <= total do
    if pos + 3 > total then error('authgate: corrupt session record') end
    local len, version = u16(raw, pos), string.byte(raw, pos + 3)
    local min = 89
    if version == 1 then min = 80 elseif version ~= LAYOUT then
      error('authgate: corrupt session record')
    end
    if len < min or pos + len - 1 > total then error('authgate: corrupt session record') end
    local e = string.sub(raw, pos, pos + len - 1)
    if version == 1 then e = upgrade(e) end
    list[#list + 1] = e
    pos = pos + len
  end
  return list
end

-- The sessions `save` dropped while still marked active (past their idle limit or lifetime,
-- never marked expired): every script returns them, so that the one caller whose write
-- dropped them tells of their expiry (no one else can see them any more).
local LAPSED = {}

-- Writes the records back without the expired ones; the key lives as long as the last of them.
local function save(key, list, now)
  local keep, last = {}, 0
  for _, e in ipairs(list) do
    local x = u48(e, EXPIRES)
    if x > now then
      keep[#keep + 1] = e
      if x > last then last = x end
    elseif state(e) == 0 then
      LAPSED[#LAPSED + 1] = e
    end
  end
  if #keep == 0 then
    redis.call('DEL', key)
  else
    redis.call('SET', key, table.concat(keep), 'PX', int(last - now))
  end
end

-- Ends record i with reason code `why`; remembers it for `tomb` ms; tells every instance.
-- Returns the old expiry (for the active-session counters).
local function finish(list, i, why, now, tomb, channel, prefix)
  local e = list[i]
  local old = u48(e, EXPIRES)
  e = string.sub(e, 1, STATE - 1) .. string.char(why) .. string.sub(e, STATE + 1)
  list[i] = set48(e, EXPIRES, now + tomb)
  redis.call('PUBLISH', channel, prefix .. sid(e))
  return old
end

local function find(list, s)
  for i, e in ipairs(list) do
    if sid(e) == s then return i end
  end
  return nil
end
