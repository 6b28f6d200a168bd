-- create_failed.lua: record a job the worker refused (JobStore.create_failed: a
-- foreign send_task with bad input) as failed, with its lifetime, and count it. A
-- redelivery of the same message finds the record there and writes nothing.
--
-- KEYS
--   1  job           the job's record (Keys.job)
--   2  stats         the counters (Keys.stats)
-- ARGV
--   1  job id
--   2  ttl           the record's lifetime, s (the retention)
--   3  error kind    counted as error_kind:<kind>
--   4.. fields       field/value pairs of the record
-- Returns 1 when recorded, 0 when the record was there already.
-- include: finite.lua
finite(ARGV[2], 'ttl')
if (#ARGV - 3) % 2 ~= 0 then error('videoq: fields must come in pairs') end
if redis.call('HSETNX', KEYS[1], 'id', ARGV[1]) == 0 then return 0 end
if #ARGV > 3 then redis.call('HSET', KEYS[1], unpack(ARGV, 4)) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], 'state:failed', 1)
redis.call('HINCRBY', KEYS[2], 'error_kind:' .. ARGV[3], 1)
return 1
