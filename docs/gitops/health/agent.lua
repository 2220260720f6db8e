-- Argo CD health of a flujo.dev Agent, from status.resolved, status.allowed and the circuit breaker.
--   resolved or allowed false -> Degraded; circuit open -> Degraded; no status -> Progressing;
--   else Healthy.
local hs = {}
if obj.status == nil or obj.status.resolved == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to resolve the agent"
  return hs
end
local status = obj.status
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to resolve generation " .. tostring(generation)
  return hs
end
if status.resolved == false then
  hs.status = "Degraded"
  hs.message = "Not resolved"
  if status.message ~= nil and status.message ~= "" then
    hs.message = "Not resolved: " .. status.message
  end
  return hs
end
if status.allowed == false then
  hs.status = "Degraded"
  hs.message = "Refused by the security policy"
  if status.message ~= nil and status.message ~= "" then
    hs.message = status.message
  end
  return hs
end
local circuit = status.circuit
if circuit ~= nil and circuit.state == "open" then
  hs.status = "Degraded"
  hs.message = "Circuit open"
  if circuit.failures ~= nil then
    hs.message = "Circuit open after " .. tostring(circuit.failures) .. " failures"
  end
  if circuit.openedAt ~= nil then
    hs.message = hs.message .. " (since " .. circuit.openedAt .. ")"
  end
  return hs
end
hs.status = "Healthy"
hs.message = "Resolved"
if circuit ~= nil and circuit.state ~= nil and circuit.state ~= "closed" then
  hs.message = "Resolved; circuit " .. circuit.state
end
return hs
