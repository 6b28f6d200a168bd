-- webhook_attempt.lua: record one webhook delivery attempt (JobStore.webhook_attempt):
-- append it to the record's list, set the webhook's state, end the lease, and move the
-- webhook's due time to the next try (or drop it when there is none).
--
-- KEYS
--   1  job           the job's record (Keys.job)
--   2  webhooks      pending webhooks, scored by when they are due (Keys.webhooks)
-- ARGV
--   1  attempt       the attempt (a JSON object)
--   2  state         the webhook's state after it
--   3  next try      when to try again, or '' when done
--   4  job id
--   5  lease         the lease the attempt was made under (from claim_webhook), or ''
-- Returns the number of attempts; 0 when the job is gone (it leaves the webhooks); -1
-- when the lease is no longer the record's (it ran out, and another delivery took the
-- webhook): then nothing is written.
-- include: finite.lua
local ok, attempt = pcall(cjson.decode, ARGV[1])
if not ok or type(attempt) ~= 'table' then error('videoq: the attempt is not a JSON object') end
if ARGV[3] ~= '' then finite(ARGV[3], 'next try') end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[4])
  return 0
end
if ARGV[5] ~= '' and (redis.call('HGET', KEYS[1], 'webhook_lease') or '') ~= ARGV[5] then
  return -1
end
local raw = redis.call('HGET', KEYS[1], 'webhook_attempts')
local attempts = {}
if raw and raw ~= '' then attempts = cjson.decode(raw) end
table.insert(attempts, attempt)
redis.call('HSET', KEYS[1], 'webhook_attempts', cjson.encode(attempts),
           'webhook_state', ARGV[2], 'webhook_lease', '0')
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
else
  redis.call('ZREM', KEYS[2], ARGV[4])
end
return #attempts
