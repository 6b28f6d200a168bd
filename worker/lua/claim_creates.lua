-- claim_creates.lua: the one create claim, for both poll modes (chain mode's
-- generate_video claims one job; batch mode's create tick claims a batch):
-- queued -> submitting, with a token only the claim's holder knows, so one job gets
-- one upstream create. The job leaves the creates book, and its due time in the active
-- set becomes the claim's timeout.
--
-- KEYS
--   1  active        the active set (Keys.active)
--   2  stats         the counters (Keys.stats)
--   3  creates       batch mode's creates book (Keys.creates)
-- ARGV
--   1  now
--   2  due time      the claim's timeout (the job's new score in the active set)
--   3  prefix        the job key prefix (Keys.job(''))
--   4  token         the claim's token (claim_token on the record)
--   5.. job ids      the jobs to claim
-- Returns the ids claimed (those that were still queued).
-- include: finite.lua
finite(ARGV[1], 'now')
finite(ARGV[2], 'due time')
local out = {}
for i = 5, #ARGV do
  local id = ARGV[i]
  local key = ARGV[3] .. id
  if redis.call('HGET', key, 'state') == 'queued' then
    redis.call('HSET', key, 'state', 'submitting', 'claim_token', ARGV[4],
               'claim_at', ARGV[1], 'updated_at', ARGV[1])
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('HINCRBY', KEYS[2], 'state:queued', -1)
    redis.call('HINCRBY', KEYS[2], 'state:submitting', 1)
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    redis.call('ZREM', KEYS[3], id)
    table.insert(out, id)
  end
end
return out
