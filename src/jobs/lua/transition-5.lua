--[[
  Moves one device from an allowed state to a new one, atomically.

  KEYS[1]  device hash          <p>:dev:<serial>
  KEYS[2]  batch counts hash    <p>:batch:<id>:counts (also "progressAt": the last move's time)
  KEYS[3]  batch failures       <p>:batch:<id>:failures
  KEYS[4]  state-set prefix     <p>:batch:<id>:in:   (the sets are <prefix><state>)
  KEYS[5]  certificate index    <p>:certs   (certificateId -> serial, for `provline device --cert`)
  ARGV[1]  expected batch id (the device must belong to it)
  ARGV[2]  target state
  ARGV[3]  allowed from-states, comma-separated
  ARGV[4]  now (epoch ms)
  ARGV[5]  failure code (only for target "failed", else "")
  ARGV[6]  an extra condition: "" (none), "!field" (the field must be absent) or
           "field=value" (the field must hold exactly that value)
  ARGV[7..] field/value pairs to store with the transition; a `certificateId` among them is
           also entered in the certificate index, whatever the strategy that obtained it

  Returns {status, state}:
    {"ok", <from>}        moved
    {"same", <to>}        already in the target state: nothing written (idempotent retry)
    {"conflict", <cur>}   current state is not an allowed from-state: nothing written
    {"unmet", <cur>}      the ARGV[6] condition does not hold: nothing written
    {"missing", ""}       no such device in this batch
]]
local cur = redis.call('HGET', KEYS[1], 'state')
local batch = redis.call('HGET', KEYS[1], 'batch')
if not cur or batch ~= ARGV[1] then
  return {'missing', ''}
end
local to = ARGV[2]
if cur == to and to ~= 'flashed' then
  return {'same', cur}
end
local allowed = false
for s in string.gmatch(ARGV[3], '[^,]+') do
  if s == cur then allowed = true end
end
if not allowed then
  return {'conflict', cur}
end
local cond = ARGV[6]
if cond ~= '' then
  if string.sub(cond, 1, 1) == '!' then
    if redis.call('HEXISTS', KEYS[1], string.sub(cond, 2)) == 1 then return {'unmet', cur} end
  else
    local eq = string.find(cond, '=', 1, true)
    if redis.call('HGET', KEYS[1], string.sub(cond, 1, eq - 1)) ~= string.sub(cond, eq + 1) then
      return {'unmet', cur}
    end
  end
end
local serial = redis.call('HGET', KEYS[1], 'serial')
redis.call('HSET', KEYS[1], 'state', to, 'updatedAt', ARGV[4], 'at:' .. to, ARGV[4])
if #ARGV > 6 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 7))
  for i = 7, #ARGV - 1, 2 do
    if ARGV[i] == 'certificateId' and ARGV[i + 1] ~= '' then
      redis.call('HSET', KEYS[5], ARGV[i + 1], serial)
    end
  end
end
if cur ~= to then
  redis.call('HSET', KEYS[2], 'progressAt', ARGV[4])
  redis.call('HINCRBY', KEYS[2], cur, -1)
  redis.call('HINCRBY', KEYS[2], to, 1)
  redis.call('SREM', KEYS[4] .. cur, serial)
  redis.call('SADD', KEYS[4] .. to, serial)
end
if to == 'failed' then
  redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
elseif cur == 'failed' then
  local code = redis.call('HGET', KEYS[1], 'errorCode')
  if code then redis.call('HINCRBY', KEYS[3], code, -1) end
  redis.call('HDEL', KEYS[1], 'errorCode', 'errorMessage', 'errorStage')
end
return {'ok', cur}
