-- transition.lua: the one state change of a job record (JobStore.transition), a
-- compare-and-set: it applies only when the record is in one of the allowed states
-- and, where given, its fencing field matches, so a late or duplicate task can never
-- change a terminal record or race a live one. A terminal state leaves the active set
-- and the books, frees the job's slot (or its place in line), queues its webhook, and
-- is counted (state, error kind, credits, completion latency). A job past its create
-- (generating, or ended) drops its stored full request.
--
-- KEYS
--   1  job           the job's record (Keys.job)
--   2  active        the active set (Keys.active)
--   3  stats         the counters (Keys.stats)
--   4  slots         the jobs holding a slot (Keys.slots)
--   5  waiting       the line for slots (Keys.waiting)
--   6  webhooks      pending webhooks (Keys.webhooks)
--   7  polls         batch mode's poll book (Keys.polls)
--   8  creates       batch mode's creates book (Keys.creates)
--   9  payload       the full request with inline images (Keys.payload): needed only
--                    for the create, so deleted once the job is past it
-- ARGV
--   1  allowed       the states the record may be in (comma list)
--   2  new state
--   3  now
--   4  fence field   or '' for no fence
--   5  fence op      'eq' (equal to the value) or 'lt' (numerically below it)
--   6  fence value
--   7  ttl           the record's lifetime when the new state is terminal, else 0
--   8  increment     a field to increment by one, or ''
--   9  terminal      the terminal states (comma list): never left, whatever ARGV[1] says
--   10 job id
--   11 due time      when the job's next step should have started (its score in the
--                    active set), or ''
--   12 buckets       the latency histogram's bounds, s (comma list)
--   13.. fields      field/value pairs to write
-- Returns 1 applied, 0 refused (state or fence), -1 no such job.
-- include: finite.lua
local function member(list, value)
  for item in string.gmatch(list, '[^,]+') do
    if item == value then return true end
  end
  return false
end
local NUMERIC_FIELDS =
  'credits_used,next_poll_at,next_create_at,submitted_at,claim_at,last_poll_at,poll_seq'
finite(ARGV[3], 'now')
finite(ARGV[7], 'ttl')
if ARGV[11] ~= '' then finite(ARGV[11], 'due time') end
if ARGV[5] == 'lt' then finite(ARGV[6], 'fence value') end
if (#ARGV - 12) % 2 ~= 0 then error('videoq: fields must come in pairs') end
for i = 13, #ARGV, 2 do
  if ARGV[i + 1] ~= '' and member(NUMERIC_FIELDS, ARGV[i]) then
    finite(ARGV[i + 1], ARGV[i])
  end
end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if member(ARGV[9], state) then return 0 end
if not member(ARGV[1], state) then return 0 end
if ARGV[4] ~= '' then
  local current = redis.call('HGET', KEYS[1], ARGV[4]) or ''
  if ARGV[5] == 'eq' then
    if current ~= ARGV[6] then return 0 end
  else
    if (tonumber(current) or 0) >= tonumber(ARGV[6]) then return 0 end
  end
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'updated_at', ARGV[3])
if #ARGV > 12 then redis.call('HSET', KEYS[1], unpack(ARGV, 13)) end
if ARGV[8] ~= '' then redis.call('HINCRBY', KEYS[1], ARGV[8], 1) end
if ARGV[2] ~= 'queued' and ARGV[2] ~= 'submitting' then redis.call('DEL', KEYS[9]) end
if state ~= ARGV[2] then
  redis.call('HINCRBY', KEYS[3], 'state:' .. state, -1)
  redis.call('HINCRBY', KEYS[3], 'state:' .. ARGV[2], 1)
end
if tonumber(ARGV[7]) > 0 then
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[7])
  redis.call('ZREM', KEYS[2], ARGV[10])
  redis.call('ZREM', KEYS[4], ARGV[10])
  redis.call('ZREM', KEYS[5], ARGV[10])
  redis.call('ZREM', KEYS[7], ARGV[10])
  redis.call('ZREM', KEYS[8], ARGV[10])
  local hook = redis.call('HGET', KEYS[1], 'webhook_url')
  if hook and hook ~= '' then
    redis.call('HSET', KEYS[1], 'webhook_state', 'pending')
    redis.call('ZADD', KEYS[6], ARGV[3], ARGV[10])
  end
  local kind = redis.call('HGET', KEYS[1], 'error_kind')
  if kind and kind ~= '' then redis.call('HINCRBY', KEYS[3], 'error_kind:' .. kind, 1) end
  local credits = tonumber(redis.call('HGET', KEYS[1], 'credits_used') or '')
  if credits and credits == credits and credits >= 0 and credits < math.huge then
    redis.call('HINCRBYFLOAT', KEYS[3], 'credits_used', credits)
  end
  if ARGV[2] == 'completed' then
    local created = tonumber(redis.call('HGET', KEYS[1], 'created_at')) or tonumber(ARGV[3])
    local took = tonumber(ARGV[3]) - created
    if took ~= took or took == math.huge or took == -math.huge then took = 0 end
    redis.call('HINCRBYFLOAT', KEYS[3], 'latency_sum', took)
    redis.call('HINCRBY', KEYS[3], 'latency_count', 1)
    for bound in string.gmatch(ARGV[12], '[^,]+') do
      if took <= tonumber(bound) then redis.call('HINCRBY', KEYS[3], 'latency_le:' .. bound, 1) end
    end
  end
elseif ARGV[11] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[11], ARGV[10])
end
return 1
