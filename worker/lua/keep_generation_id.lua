-- keep_generation_id.lua: on a job cancelled while its create was on its way
-- (JobStore.keep_generation_id), still note the upstream's generation id on the
-- record. Only a cancelled record is written (terminal states are final: nothing else
-- changes it), and never a record that is gone.
--
-- KEYS
--   1  job           the job's record (Keys.job)
-- ARGV
--   1  generation id
-- Returns 1 when noted, 0 when the record is not cancelled (or gone).
if redis.call('HGET', KEYS[1], 'state') ~= 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], 'generation_id', ARGV[1])
return 1
