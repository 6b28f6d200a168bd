-- take_creates.lua: batch mode: take up to limit creates due by horizon from the
-- creates book and lease them (their score moves to the lease's end), so no other tick
-- takes them meanwhile; a tick that dies leaves them due again at the lease's end.
--
-- KEYS
--   1  creates       batch mode's creates book (Keys.creates)
-- ARGV
--   1  horizon       take creates due by this time
--   2  limit         at most this many
--   3  lease end     their new score
-- Returns {more, id, id, ...}: more is how many are still due after these.
-- include: finite.lua
finite(ARGV[1], 'horizon')
finite(ARGV[2], 'limit')
finite(ARGV[3], 'lease end')
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {0}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], ARGV[3], id)
  table.insert(out, id)
end
out[1] = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])
return out
