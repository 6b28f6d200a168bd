-- Batch mode: put polls in the book, each scored by when it is due, with the job's
-- count of transient errors in a row kept on its record (the next claim reads it).
--
-- KEYS[1] polls. ARGV[1] job key prefix, then triples (job id, due time, errors).
for i = 2, #ARGV, 3 do
  finite(ARGV[i + 1], 'due time')
  finite(ARGV[i + 2], 'errors')
end
for i = 2, #ARGV, 3 do
  redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
  redis.call('HSET', ARGV[1] .. ARGV[i], 'poll_errors', ARGV[i + 2])
end
return (#ARGV - 1) / 3
