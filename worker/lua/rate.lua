-- rate.lua: the fleet-wide upstream rate limit (see worker/ratelimit.py for the
-- design): reserve call slots, pause the fleet after a 429, or peek at the pause.
--
-- KEYS
--   1  limiter       the limiter's hash (Keys.rate)
--   2  stats         the counters (Keys.stats)
-- ARGV
--   1  op            'reserve' | 'pause' | 'peek'
--   2  now           seconds, or '' for Redis's own clock (TIME): every host agrees on it
--   reserve: 3 rate (calls/s, > 0), 4 kind ('create' | 'poll'), 5 horizon (the kind's
--            burst tolerance, s), 6 how long demand that was held back counts as
--            pressing (s), 7.. each call's own horizon (s).
--   pause:   3 seconds (from a 429's Retry-After).
--   peek:    nothing more.
-- Returns strings (Redis would cut Lua numbers to integers): first the pause left (s),
-- then, for reserve, one entry per call: '+<wait>' (granted: start after <wait> s)
-- or '-<retry after>' (refused: not to be sent; a slot is expected in that long).
-- include: finite.lua
-- Writes after TIME: replicate the effects (the default from Redis 7 on).
if redis.replicate_commands then redis.replicate_commands() end
local op = ARGV[1]
local now
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = finite(ARGV[2], 'now')
end
local state, stats = KEYS[1], KEYS[2]
local function num(field, default)
  return tonumber(redis.call('HGET', state, field)) or default
end
local function fmt(x)
  return string.format('%.17g', x)  -- every bit: a schedule step is never shortened
end
local LIFETIME = 3600  -- an idle limiter's state goes away after this long
local pause = num('pause', 0)

if op == 'peek' then
  return {fmt(math.max(0, pause - now))}
end

if op == 'pause' then
  local seconds = finite(ARGV[3], 'pause')
  if seconds > 0 and now + seconds > pause then
    pause = now + seconds
    -- After the pause the schedule starts again from its end, at the rate.
    redis.call('HSET', state, 'pause', fmt(pause), 'tat', fmt(math.max(num('tat', 0), pause)))
    redis.call('EXPIRE', state, LIFETIME + math.ceil(seconds))
  end
  return {fmt(math.max(0, pause - now))}
end

if op ~= 'reserve' then error('videoq: unknown rate-limit op ' .. tostring(op)) end
local rate = finite(ARGV[3], 'rate')
if rate <= 0 then error('videoq: the rate must be > 0') end
local kind = ARGV[4]
local other
if kind == 'create' then other = 'poll' elseif kind == 'poll' then other = 'create'
else error('videoq: unknown call kind ' .. tostring(kind)) end
local horizon = finite(ARGV[5], 'horizon')
local window = finite(ARGV[6], 'pressed window')
for i = 7, #ARGV do finite(ARGV[i], 'call horizon') end

local step = 1 / rate          -- the fleet's schedule: one call per step
local share = 2 * step         -- a kind's half of the rate, under contention
local out = {fmt(math.max(0, pause - now))}
local tat = math.max(num('tat', now), now)
local tat_kind = math.max(num('tat:' .. kind, now), now)
local contended = now - num('pressed:' .. other, -math.huge) < window
local granted, refused, pressed = 0, 0, false

for i = 7, #ARGV do
  local h = tonumber(ARGV[i])
  if pause > now then
    -- Paused by the upstream: nothing goes out; each call is told to come back after
    -- the pause, one schedule step apart, so they do not all return at once.
    out[#out + 1] = '-' .. fmt(math.max(tat, pause) - now + refused * step)
    refused = refused + 1
  elseif tat - now <= h and (not contended or tat_kind - now <= horizon) then
    out[#out + 1] = '+' .. fmt(tat - now)
    if tat - now > horizon / 2 then pressed = true end
    tat = tat + step
    tat_kind = tat_kind + share
    granted = granted + 1
  else
    -- When a slot would be in this call's reach: behind the fleet's schedule, and
    -- behind its kind's half of the rate while the other kind presses.
    local at = tat + refused * step - h
    if contended then at = math.max(at, tat_kind + refused * share - horizon) end
    out[#out + 1] = '-' .. fmt(math.max(at - now, 0.01))
    refused = refused + 1
    pressed = true
  end
end

if not contended then
  -- Uncontended, a kind may use the whole rate; its meter stays near full so that,
  -- once the other kind presses, it falls back to its half within a step or two.
  tat_kind = math.min(tat_kind, now + horizon + share)
end
redis.call('HSET', state, 'tat', fmt(tat), 'tat:' .. kind, fmt(tat_kind))
if pressed then redis.call('HSET', state, 'pressed:' .. kind, fmt(now)) end
redis.call('EXPIRE', state, LIFETIME + math.ceil(math.max(0, pause - now)))
if granted > 0 then redis.call('HINCRBY', stats, 'upstream_calls:' .. kind, granted) end
if refused > 0 then redis.call('HINCRBY', stats, 'upstream_throttled:' .. kind, refused) end
return out
