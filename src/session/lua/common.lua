-- authgate session records: helpers shared by every script (prepended to each).
-- One string key per user holds that user's records back to back; the layout is described in
-- src/session/record.rs (offsets there are 0-based, here 1-based). Numbers are little-endian.
local STATE, CREATED, SEEN, ROTATED, EXPIRES, GEN, SID, CUR, PAR, TEXT =
  3, 5, 9, 13, 17, 21, 25, 41, 57, 73

local function u16(s, i)
  local a, b = string.byte(s, i, i + 1)
  return a + b * 256
end

local function u32(s, i)
  local a, b, c, d = string.byte(s, i, i + 3)
  return a + b * 256 + c * 65536 + d * 16777216
end

local function set32(e, off, n)
  n = math.floor(n)
  if n < 0 then n = 0 elseif n > 4294967295 then n = 4294967295 end
  local b = string.char(n % 256, math.floor(n / 256) % 256, math.floor(n / 65536) % 256,
    math.floor(n / 16777216) % 256)
  return string.sub(e, 1, off - 1) .. b .. string.sub(e, off + 4)
end

local function setb(e, off, b)
  return string.sub(e, 1, off - 1) .. b .. string.sub(e, off + #b)
end

local function state(e) return string.byte(e, STATE) end
local function sid(e) return string.sub(e, SID, SID + 15) end
local function platform(e)
  local n = string.byte(e, TEXT)
  return string.sub(e, TEXT + 1, TEXT + n)
end
local function live(e, now) return state(e) == 0 and u32(e, EXPIRES) > now end

-- The user's records as a list of strings (empty if the key does not exist).
local function load(key)
  local raw = redis.call('GET', key)
  local list = {}
  if not raw then return list end
  local pos, total = 1, #raw
  while pos <= total do
    if pos + 1 > total then error('authgate: corrupt session record') end
    local len = u16(raw, pos)
    if len < 80 or pos + len - 1 > total then error('authgate: corrupt session record') end
    list[#list + 1] = string.sub(raw, pos, pos + len - 1)
    pos = pos + len
  end
  return list
end

-- Writes the records back without the expired ones; the key lives as long as the last of them.
local function save(key, list, now)
  local keep, last = {}, 0
  for _, e in ipairs(list) do
    local x = u32(e, EXPIRES)
    if x > now then
      keep[#keep + 1] = e
      if x > last then last = x end
    end
  end
  if #keep == 0 then
    redis.call('DEL', key)
  else
    redis.call('SET', key, table.concat(keep), 'EX', last - now)
  end
end

-- Ends record i with reason code `why`; remembers it for `tomb` seconds; tells every instance.
-- Returns the old expiry (for the active-session counters).
local function finish(list, i, why, now, tomb, channel, prefix)
  local e = list[i]
  local old = u32(e, EXPIRES)
  e = string.sub(e, 1, STATE - 1) .. string.char(why) .. string.sub(e, STATE + 1)
  list[i] = set32(e, EXPIRES, now + tomb)
  redis.call('PUBLISH', channel, prefix .. sid(e))
  return old
end

local function find(list, s)
  for i, e in ipairs(list) do
    if sid(e) == s then return i end
  end
  return nil
end
