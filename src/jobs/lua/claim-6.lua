--[[
  Claims up to N keyed devices of a batch for one registration chunk: each moves
  keyed -> registering with the chunk number, and the chunk is recorded with its serials, all
  in one step (a crash leaves either no chunk or a complete one).

  KEYS[1]  state-set prefix    <p>:batch:<id>:in:
  KEYS[2]  batch counts hash   <p>:batch:<id>:counts
  KEYS[3]  chunk sequence      <p>:batch:<id>:chunkseq
  KEYS[4]  chunk list          <p>:batch:<id>:chunks
  KEYS[5]  chunk key prefix    <p>:batch:<id>:chunk:
  KEYS[6]  device key prefix   <p>:dev:
  ARGV[1]  batch id
  ARGV[2]  max devices
  ARGV[3]  now (epoch ms)
  ARGV[4]  registration mode (bulk | single)

  Returns {chunkNumber, serial...} or {} when no device is keyed.
]]
local picked = redis.call('SRANDMEMBER', KEYS[1] .. 'keyed', tonumber(ARGV[2]))
if #picked == 0 then return {} end
table.sort(picked)
local n = redis.call('INCR', KEYS[3])
local serials = {}
for _, serial in ipairs(picked) do
  local dev = KEYS[6] .. serial
  if redis.call('HGET', dev, 'state') == 'keyed' and redis.call('HGET', dev, 'batch') == ARGV[1] then
    redis.call('HSET', dev, 'state', 'registering', 'updatedAt', ARGV[3], 'at:registering', ARGV[3],
      'regChunk', tostring(n))
    redis.call('SREM', KEYS[1] .. 'keyed', serial)
    redis.call('SADD', KEYS[1] .. 'registering', serial)
    redis.call('HINCRBY', KEYS[2], 'keyed', -1)
    redis.call('HINCRBY', KEYS[2], 'registering', 1)
    table.insert(serials, serial)
  else
    redis.call('SREM', KEYS[1] .. 'keyed', serial)
  end
end
redis.call('HSET', KEYS[5] .. n, 'n', tostring(n), 'state', 'claimed', 'mode', ARGV[4],
  'serials', table.concat(serials, '\n'), 'createdAt', ARGV[3])
redis.call('RPUSH', KEYS[4], tostring(n))
redis.call('HSET', KEYS[2], 'progressAt', ARGV[3])
local out = {tostring(n)}
for _, s in ipairs(serials) do table.insert(out, s) end
return out
