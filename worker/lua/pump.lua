-- pump.lua: is there batch work due now that no tick message is on its way for?
-- (every worker's pump, a few times a second). One tick message per book per
-- tick-wide slot, for the whole fleet: the first pump to see due work in a slot takes
-- the slot's key.
--
-- KEYS
--   1  polls         batch mode's poll book (Keys.polls)
--   2  creates       batch mode's creates book (Keys.creates)
-- ARGV
--   1  now
--   2  slot          the tick-wide slot's number (ms)
--   3  prefix        the slot keys' prefix
--   4  lifetime      a slot key's lifetime (ms)
-- Returns {poll slot taken (0/1), create slot taken (0/1), next due poll or create
-- time ('' when both books are empty)}.
-- include: finite.lua
local now = finite(ARGV[1], 'now')
finite(ARGV[2], 'slot')
finite(ARGV[4], 'slot key lifetime')
local out = {0, 0}
local next_due = nil
for i, name in ipairs({'poll', 'create'}) do
  local first = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if first[2] then
    local due = tonumber(first[2])
    if due <= now then
      if redis.call('SET', ARGV[3] .. name .. ':' .. ARGV[2], '1', 'NX', 'PX', ARGV[4]) then
        out[i] = 1
      end
    end
    if next_due == nil or due < next_due then next_due = due end
  end
end
table.insert(out, next_due and tostring(next_due) or '')
return out
