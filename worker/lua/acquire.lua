-- acquire.lua: take a slot under VIDEOQ_MAX_IN_FLIGHT (Budget.acquire_slot), or wait
-- in line for one. The line (waiting) is in acceptance order: producers put each job
-- in it when the cap is on. A job takes a free slot only if fewer jobs are ahead of it
-- in line than there are free slots; else it waits (joining the line if it was not in
-- it).
--
-- KEYS
--   1  slots         the jobs holding a slot, scored by when they took it (Keys.slots)
--   2  waiting       the line, scored by acceptance time (Keys.waiting)
-- ARGV
--   1  job id
--   2  max           the cap (VIDEOQ_MAX_IN_FLIGHT)
--   3  now
--   4  accepted      the job's acceptance time (its place in line)
-- Returns 1 (the job holds a slot) or 0 (it waits in line).
-- include: finite.lua
finite(ARGV[2], 'max')
finite(ARGV[3], 'now')
finite(ARGV[4], 'acceptance time')
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
redis.call('ZADD', KEYS[2], 'NX', ARGV[4], ARGV[1])
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
if free > 0 and redis.call('ZRANK', KEYS[2], ARGV[1]) < free then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
return 0
