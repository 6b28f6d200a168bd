-- create.lua: store a new queued job (JobStore.create), with its request, its
-- idempotency key, its due time in the active set, its place in the line for slots
-- (when VIDEOQ_MAX_IN_FLIGHT is on) and, in batch mode, its create in the creates book.
-- A job id that exists already (a redelivered message) is never overwritten.
--
-- KEYS
--   1  job           the job's record (Keys.job)
--   2  idempotency   the idempotency key's key, or '' without one
--   3  active        the active set (Keys.active)
--   4  stats         the counters (Keys.stats)
--   5  waiting       the line for slots (Keys.waiting)
--   6  payload       the full request's key, or '' when the record's request is the
--                    full one (no inline images)
--   7  creates       batch mode's creates book, or '' (chain mode: a message starts it)
--   8  request       the request's key (Keys.request)
-- ARGV
--   1  job id
--   2  ttl           the record's lifetime, s
--   3  fingerprint   the request's (and webhook's) hash, for the idempotency key
--   4  prefix        the job key prefix (Keys.job(''))
--   5  due time      when the sweeper may take the job for stalled
--   6  line          '1' to join the line for slots (the cap is on), else '0'
--   7  accepted      the acceptance time (the line's and the book's order)
--   8  payload       the full request (JSON), '' without KEYS[6]
--   9  request       the request as the record shows it (JSON)
--   10.. fields      field/value pairs of the record
-- Returns '' when created, else '<existing job id> <fingerprint>' (the job, or the one
-- its idempotency key already names).
-- include: finite.lua
finite(ARGV[2], 'ttl')
finite(ARGV[5], 'due time')
finite(ARGV[7], 'acceptance time')
if (#ARGV - 9) % 2 ~= 0 then error('videoq: fields must come in pairs') end
for i = 10, #ARGV, 2 do
  local name = ARGV[i]
  if name == 'created_at' or name == 'updated_at' or name == 'deadline_at' then
    finite(ARGV[i + 1], name)
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return ARGV[1] .. ' ' .. ARGV[3] end
if KEYS[2] ~= '' then
  local existing = redis.call('GET', KEYS[2])
  if existing then
    local existing_id = string.match(existing, '^(%S+)')
    if redis.call('EXISTS', ARGV[4] .. existing_id) == 1 then return existing end
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 10))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[8], ARGV[9], 'EX', ARGV[2])
if KEYS[6] ~= '' then redis.call('SET', KEYS[6], ARGV[8], 'EX', ARGV[2]) end
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
if ARGV[6] == '1' then redis.call('ZADD', KEYS[5], ARGV[7], ARGV[1]) end
if KEYS[7] ~= '' then redis.call('ZADD', KEYS[7], ARGV[7], ARGV[1]) end
redis.call('HINCRBY', KEYS[4], 'state:queued', 1)
if KEYS[2] ~= '' then
  redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. ARGV[3], 'EX', ARGV[2])
end
return ''
