"""The Lua scripts Redis runs for the collector: each one reads and writes a feed's keys atomically.

Keys of a feed (the ``{FEED}`` hash tag keeps them in one cluster slot):

- ``PREFIX:lease:{FEED}``: ``TOKEN|REPLICA`` with a TTL, the feed's owner;
- ``PREFIX:token:{FEED}``: the fencing-token counter, only ever incremented;
- ``PREFIX:state:{FEED}``: a hash: ``token`` (the current owner's), ``owner``,
  ``seq``/``time`` of the last written message, ``writer``/``writer_token``
  (who wrote it), ``fenced`` (messages refused to an outdated owner);
- ``PREFIX:stream:{FEED}``: the stream of messages and gap records.
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "HEARTBEAT", "RELEASE", "RENEW", "WRITE"]

ACQUIRE = """
-- KEYS: lease, token, state; ARGV: replica, ttl in ms.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  -- A counter lost with the data (a restart without persistence) starts again
  -- from the server's clock in microseconds: above every token handed out before.
  local now = redis.call('TIME')
  redis.call('SET', KEYS[2], now[1] .. string.format('%06d', tonumber(now[2])))
end
local token = redis.call('INCR', KEYS[2])
local value = string.format('%d|%s', token, ARGV[1])
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
redis.call('HSET', KEYS[3], 'token', string.format('%d', token), 'owner', ARGV[1])
local state = redis.call('HMGET', KEYS[3], 'seq', 'time', 'writer', 'writer_token')
return {value, state[1], state[2], state[3], state[4]}
"""

RENEW = """
-- KEYS: lease; ARGV: value, ttl in ms. Extend only the holder's own lease.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE = """
-- KEYS: lease; ARGV: value. Delete only the holder's own lease.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

HEARTBEAT = """
-- KEYS: replicas (sorted set, score = expiry in ms by the server's clock);
-- ARGV: replica, ttl in ms, '1' to leave. Returns the live replicas.
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[2]), ARGV[1])
end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

WRITE = """
-- KEYS: lease, state, stream.
-- ARGV: token, replica, feed, maxlen ('' for none), gap kind ('' for none), count,
--       then count triples: sequence number ('' for none), time received, payload.
-- Returns {written, duplicates, holes, gap written (0/1)}, or {-1, ...} when fenced.
local token, replica, feed = ARGV[1], ARGV[2], ARGV[3]
local count = tonumber(ARGV[6])
local current = tonumber(redis.call('HGET', KEYS[2], 'token') or '0')
if redis.call('GET', KEYS[1]) ~= token .. '|' .. replica or tonumber(token) < current then
  redis.call('HINCRBY', KEYS[2], 'fenced', count)
  return {-1, 0, 0, 0}
end
local xadd = {'XADD', KEYS[3]}
if ARGV[4] ~= '' then
  xadd = {'XADD', KEYS[3], 'MAXLEN', '~', ARGV[4]}
end
local function append(...)
  local command = {unpack(xadd)}
  command[#command + 1] = '*'
  for _, value in ipairs({...}) do
    command[#command + 1] = value
  end
  return redis.call(unpack(command))
end
local state = redis.call('HMGET', KEYS[2], 'seq', 'time', 'writer', 'writer_token')
local last_text, last_time, writer, writer_token = state[1], state[2], state[3], state[4]
local last = last_text and tonumber(last_text)
local gap = ARGV[5]
local gap_written = 0
local written, duplicates, holes = 0, 0, 0
for i = 0, count - 1 do
  local seq_text, received, payload = ARGV[7 + 3 * i], ARGV[8 + 3 * i], ARGV[9 + 3 * i]
  local seq = nil
  if seq_text ~= '' then
    seq = tonumber(seq_text)
  end
  if seq and last and seq <= last then
    duplicates = duplicates + 1
  else
    local kind = nil
    if gap ~= '' then
      kind = gap
      gap = ''
      gap_written = 1
    elseif seq and last and seq > last + 1 then
      kind = 'hole'
      holes = holes + 1
    end
    if kind then
      append('type', 'gap', 'feed', feed, 'kind', kind,
        'before_seq', last_text or '', 'before_time', last_time or '',
        'before_owner', writer or '', 'before_token', writer_token or '',
        'after_seq', seq_text, 'after_time', received, 'after_owner', replica, 'after_token', token)
    end
    xadd[#xadd + 1] = '*'
    local n = #xadd
    xadd[n + 1] = 'type'
    xadd[n + 2] = 'msg'
    xadd[n + 3] = 'feed'
    xadd[n + 4] = feed
    xadd[n + 5] = 'seq'
    xadd[n + 6] = seq_text
    xadd[n + 7] = 'time'
    xadd[n + 8] = received
    xadd[n + 9] = 'replica'
    xadd[n + 10] = replica
    xadd[n + 11] = 'token'
    xadd[n + 12] = token
    xadd[n + 13] = 'data'
    xadd[n + 14] = payload
    redis.call(unpack(xadd))
    for j = n, n + 14 do
      xadd[j] = nil
    end
    written = written + 1
    if seq then
      last = seq
      last_text = seq_text
    end
    last_time = received
    writer, writer_token = replica, token
  end
end
if written > 0 then
  local fields = {'time', last_time, 'writer', replica, 'writer_token', token}
  if last_text then
    fields[#fields + 1] = 'seq'
    fields[#fields + 1] = last_text
  end
  redis.call('HSET', KEYS[2], unpack(fields))
end
return {written, duplicates, holes, gap_written}
"""
