-- schedule_polls.lua: batch mode: book polls, each scored by when it is due. A poll
-- step that goes on books its job's next poll here, with what it notes on the record
-- (the due time, the last transient error, the count of them in a row), fenced by its
-- own poll number: one script for a whole tick's next polls, instead of a write per
-- job. A job whose record moved on meanwhile (cancelled, or a later poll claimed it)
-- is not booked. A first poll (just created) has no fence and notes nothing but the
-- error count.
--
-- KEYS
--   1  polls         batch mode's poll book (Keys.polls)
--   2  active        the active set (Keys.active)
-- ARGV
--   1  prefix        the job key prefix (Keys.job(''))
--   2  now
--   3  stall         the stall timeout, s (added to the due time in the active set)
--   4.. sextuples    job id, due time, errors in a row, poll number or '' (no fence),
--                    '1' to note the last error or '0' to keep the record's, the
--                    last error
-- Returns the number of polls booked.
-- include: finite.lua
finite(ARGV[2], 'now')
finite(ARGV[3], 'stall timeout')
for i = 4, #ARGV, 6 do
  finite(ARGV[i + 1], 'due time')
  finite(ARGV[i + 2], 'errors')
  if ARGV[i + 3] ~= '' then finite(ARGV[i + 3], 'poll number') end
end
local booked = 0
for i = 4, #ARGV, 6 do
  local id, due = ARGV[i], ARGV[i + 1]
  local key = ARGV[1] .. id
  local ok = true
  if ARGV[i + 3] ~= '' then
    local f = redis.call('HMGET', key, 'state', 'poll_seq')
    ok = f[1] == 'generating' and tonumber(f[2]) == tonumber(ARGV[i + 3])
    if ok then
      redis.call('HSET', key, 'next_poll_at', due, 'updated_at', ARGV[2])
      if ARGV[i + 4] == '1' then redis.call('HSET', key, 'last_error', ARGV[i + 5]) end
      redis.call('ZADD', KEYS[2], tonumber(due) + tonumber(ARGV[3]), id)
    end
  end
  if ok then
    redis.call('HSET', key, 'poll_errors', ARGV[i + 2])
    redis.call('ZADD', KEYS[1], due, id)
    booked = booked + 1
  end
end
return booked
