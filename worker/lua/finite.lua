-- finite.lua: the number check every script makes before its first write, so that a
-- bad value (a NaN, an infinity, a missing number) fails the whole script and leaves
-- nothing half-written. Not a script of its own: a script that needs it says
-- "-- include: finite.lua", and worker.store.lua_script puts this text there.
--
-- KEYS: none.
-- ARGV: none.
-- Defines finite(value, what): value as a number; raises "videoq: <what> is not a
-- finite number" when it is not one.
local function finite(value, what)
  local n = tonumber(value)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then
    error('videoq: ' .. what .. ' is not a finite number: ' .. tostring(value))
  end
  return n
end
