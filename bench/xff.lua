-- wrk script for case (k): each request comes from another X-Forwarded-For address, as
-- many clients behind a trusted proxy would, so the gateway's per-IP captcha rate (10 a
-- second) does not refuse them. LuaJIT (Lua 5.1): no bit operators.
local n = 0
request = function()
  n = n + 1
  local ip = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format(nil, nil, { ["X-Forwarded-For"] = ip })
end
