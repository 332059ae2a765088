--[[
  Which of these serials another batch holds (a read-only check before a batch is recorded).

  KEYS[1]  key prefix for devices, e.g. "provline:dev:"
  ARGV[1]  this batch's id
  ARGV[2..] serials

  Returns a flat list of {serial, otherBatch, state, hasCertificate ("1" or "0")} for each
  serial that belongs to another batch.
]]
local out = {}
for i = 2, #ARGV do
  local key = KEYS[1] .. ARGV[i]
  local batch = redis.call('HGET', key, 'batch')
  if batch and batch ~= ARGV[1] then
    local state = redis.call('HGET', key, 'state') or ''
    local cert = redis.call('HEXISTS', key, 'certificateId')
    table.insert(out, ARGV[i])
    table.insert(out, batch)
    table.insert(out, state)
    table.insert(out, tostring(cert))
  end
end
return out
