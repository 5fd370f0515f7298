-- Argo CD health check for relaytls.io RelayCluster (one registered workload cluster).
--   Healthy      Registered=True for the current generation
--   Suspended    spec.revoked is true: the cluster is revoked on purpose
--   Progressing  no status yet, or a Registered condition for an older generation
--   Degraded     Registered=False for another reason
local hs = {}
if obj.spec ~= nil and obj.spec.revoked == true then
  hs.status = "Suspended"
  hs.message = "Revoked: the cluster's renewals are refused and its relay connections are cut"
  return hs
end
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for relay-issuer to report a Registered condition"
  return hs
end
local reg = nil
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Registered" then
    reg = c
  end
end
if reg == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for relay-issuer to report a Registered condition"
  return hs
end
local gen = obj.metadata and obj.metadata.generation
if gen ~= nil and reg.observedGeneration ~= nil and reg.observedGeneration < gen then
  hs.status = "Progressing"
  hs.message = "Waiting for relay-issuer to observe generation " .. tostring(gen)
  return hs
end
local msg = (reg.reason or "") .. ": " .. (reg.message or "")
if reg.status == "True" then
  hs.status = "Healthy"
else
  hs.status = "Degraded"
end
hs.message = msg
return hs
