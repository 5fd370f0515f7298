-- Argo CD health check for relaytls.io RelayIssuer and RelayClusterIssuer.
--   Healthy      Ready=True for the issuer's current generation
--   Progressing  no status or no Ready condition yet, a Ready condition for an
--                older generation, or Ready=Unknown (initializing)
--   Degraded     Ready=False (the message says which Secret and what is wrong;
--                relay-issuer retries and recovers once it is fixed)
--   Progressing  while the issuer is being deleted, whatever its conditions
local hs = {}
local function progressing(msg)
  hs.status = "Progressing"
  hs.message = msg
  return hs
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  return progressing("Being deleted (since " .. tostring(obj.metadata.deletionTimestamp) .. ")")
end

if obj.status == nil or obj.status.conditions == nil then
  return progressing("Waiting for relay-issuer to report a Ready condition")
end

local ready = nil
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    ready = c
  end
end
if ready == nil then
  return progressing("Waiting for relay-issuer to report a Ready condition")
end

local generation = (obj.metadata and obj.metadata.generation) or 0
local observed = ready.observedGeneration or 0
if observed < generation then
  return progressing("Waiting for relay-issuer to check generation " .. tostring(generation) ..
    " (Ready condition is for generation " .. tostring(observed) .. ")")
end

local msg = ready.message or ""
if ready.reason ~= nil and ready.reason ~= "" then
  msg = ready.reason .. ": " .. msg
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = msg
  return hs
end
if ready.status == "False" then
  hs.status = "Degraded"
  hs.message = msg
  return hs
end
return progressing(msg)
