-- claim_polls.lua: the one claim of a poll, for both poll modes: chain mode's
-- poll_video claims its own poll by number ('ids'); batch mode's tick claims every
-- poll due in the book ('due'). A claim raises the record's poll_seq (to the poll's
-- number, or by one), counts the attempt, and leases the job: its due time in the
-- active set (what the sweeper reads) and, when the job is booked, in polls moves to
-- the lease's end. A booked job that is no longer generating leaves the book; a stale
-- or duplicate poll is not returned.
--
-- KEYS
--   1  polls         batch mode's poll book (Keys.polls)
--   2  active        the active set (Keys.active)
-- ARGV
--   1  now
--   2  lease end     the claimed job's new score in the book
--   3  due time      the sweeper's due time (the job's new score in the active set)
--   4  prefix        the job key prefix (Keys.job(''))
--   5  mode          'due' or 'ids', then
--      'due': 6 horizon, 7 limit: up to limit polls due by horizon;
--      'ids': pairs (job id, poll number): each only if poll_seq is below its number.
-- Returns {more, id, deadline, seq, errors, generation id, due time, ...}: more is how
-- many polls are still due after this batch ('due'; 0 for 'ids'), then six entries
-- per poll claimed.
-- include: finite.lua
local now = finite(ARGV[1], 'now')
finite(ARGV[2], 'lease end')
finite(ARGV[3], 'due time')
local prefix, mode = ARGV[4], ARGV[5]
local wanted = {}
if mode == 'due' then
  finite(ARGV[6], 'horizon')
  finite(ARGV[7], 'limit')
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[6], 'LIMIT', 0, ARGV[7])) do
    table.insert(wanted, {id, nil})
  end
elseif mode == 'ids' then
  for i = 6, #ARGV, 2 do
    table.insert(wanted, {ARGV[i], finite(ARGV[i + 1], 'poll number')})
  end
else
  error('videoq: unknown claim mode ' .. tostring(mode))
end
local out = {0}
for _, want in ipairs(wanted) do
  local id, number = want[1], want[2]
  local key = prefix .. id
  local f = redis.call('HMGET', key, 'state', 'deadline_at', 'poll_seq', 'poll_errors',
                       'generation_id')
  local due = redis.call('ZSCORE', KEYS[1], id) or ARGV[1]
  if f[1] == 'generating' and f[5] and f[5] ~= '' then
    local seq = number or (tonumber(f[3]) or 0) + 1
    if (tonumber(f[3]) or 0) < seq then
      redis.call('HSET', key, 'poll_seq', seq, 'last_poll_at', ARGV[1], 'updated_at', ARGV[1])
      redis.call('HINCRBY', key, 'attempts', 1)
      redis.call('ZADD', KEYS[2], ARGV[3], id)
      redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
      table.insert(out, id)
      table.insert(out, f[2] or '0')
      table.insert(out, tostring(seq))
      table.insert(out, f[4] or '0')
      table.insert(out, f[5])
      table.insert(out, due)
    end
  elseif mode == 'due' then
    redis.call('ZREM', KEYS[1], id)
  end
end
if mode == 'due' then out[1] = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[6]) end
return out
