--[[
  Records a chunk of a batch's devices in state "accepted", all or nothing per chunk.

  KEYS[1]  batch counts hash   <p>:batch:<id>:counts
  KEYS[2]  batch serials list  <p>:batch:<id>:serials
  KEYS[3]  batch hash          <p>:batch:<id>
  KEYS[4]  key prefix for devices, e.g. "provline:dev:"
  ARGV[1]  batch id
  ARGV[2]  now (epoch ms)
  ARGV[3]  "skip-existing" or "refuse-existing"
  ARGV[4..] triples: serial, thingName, line

  A serial that already belongs to another batch is either skipped (and returned) or makes the
  whole chunk fail with nothing written. A serial already accepted into this batch (a retried
  submit) is left as it is.

  Returns {"ok", accepted, skipped...} or {"exists", serial, otherBatch, state}.
]]
local existing = {}
for i = 4, #ARGV, 3 do
  local key = KEYS[4] .. ARGV[i]
  local other = redis.call('HGET', key, 'batch')
  if other and other ~= ARGV[1] then
    if ARGV[3] ~= 'skip-existing' then
      return {'exists', ARGV[i], other, redis.call('HGET', key, 'state') or ''}
    end
    existing[ARGV[i]] = true
  end
end
local accepted = 0
local skipped = {}
for i = 4, #ARGV, 3 do
  local serial = ARGV[i]
  local key = KEYS[4] .. serial
  if existing[serial] then
    table.insert(skipped, serial)
  elseif redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'serial', serial, 'batch', ARGV[1], 'thingName', ARGV[i + 1], 'line', ARGV[i + 2],
      'state', 'accepted', 'createdAt', ARGV[2], 'updatedAt', ARGV[2], 'at:accepted', ARGV[2])
    redis.call('RPUSH', KEYS[2], serial)
    redis.call('HINCRBY', KEYS[1], 'accepted', 1)
    accepted = accepted + 1
  end
end
redis.call('HINCRBY', KEYS[3], 'total', accepted)
local out = {'ok', tostring(accepted)}
for _, s in ipairs(skipped) do table.insert(out, s) end
return out
