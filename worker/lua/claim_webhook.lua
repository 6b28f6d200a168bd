-- claim_webhook.lua: take the lease on a pending webhook's delivery
-- (JobStore.claim_webhook) unless another delivery holds it, and move the webhook's
-- due time (what the sweeper reads) to the lease's end.
--
-- KEYS
--   1  job           the job's record (Keys.job)
--   2  webhooks      pending webhooks, scored by when they are due (Keys.webhooks)
-- ARGV
--   1  now
--   2  lease end     the lease (also the webhook's new due time)
--   3  job id
-- Returns 1 when taken, 0 when the webhook is not pending or a delivery holds it.
-- include: finite.lua
local now = finite(ARGV[1], 'now')
finite(ARGV[2], 'lease end')
if redis.call('HGET', KEYS[1], 'webhook_state') ~= 'pending' then return 0 end
local held = tonumber(redis.call('HGET', KEYS[1], 'webhook_lease') or '') or 0
if held > now then return 0 end
redis.call('HSET', KEYS[1], 'webhook_lease', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
