-- Argo CD health of a flujo.dev Pipeline, from the Valid and AgentsResolved conditions.
--   both True -> Healthy; either False -> Degraded; missing, Unknown or stale -> Progressing.
local hs = {}
if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to validate the pipeline"
  return hs
end
local status = obj.status
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to validate generation " .. tostring(generation)
  return hs
end
local found = {}
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Valid" or condition.type == "AgentsResolved" then
      found[condition.type] = condition
    end
  end
end
for _, kind in ipairs({"Valid", "AgentsResolved"}) do
  local condition = found[kind]
  if condition ~= nil and condition.status == "False" then
    hs.status = "Degraded"
    hs.message = kind .. " is False"
    if condition.message ~= nil and condition.message ~= "" then
      hs.message = hs.message .. ": " .. condition.message
    elseif condition.reason ~= nil then
      hs.message = hs.message .. ": " .. condition.reason
    end
    return hs
  end
end
for _, kind in ipairs({"Valid", "AgentsResolved"}) do
  local condition = found[kind]
  if condition == nil or condition.status ~= "True" then
    hs.status = "Progressing"
    hs.message = "Waiting for condition " .. kind
    return hs
  end
end
hs.status = "Healthy"
hs.message = "Valid, all agents resolved"
return hs
