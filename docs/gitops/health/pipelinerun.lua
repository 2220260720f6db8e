-- Argo CD health of a flujo.dev PipelineRun, from status.phase (set by the operator).
--   Succeeded -> Healthy; Pending, Running -> Progressing; Failed, Cancelled -> Degraded.
local hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to start the run"
  return hs
end
local status = obj.status
local phase = status.phase
local detail = status.message or status.reason or ""
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = "Succeeded"
  if status.progress ~= nil then
    hs.message = "Succeeded: " .. status.progress .. " steps"
  end
elseif phase == "Running" or phase == "Pending" then
  hs.status = "Progressing"
  hs.message = phase
  if phase == "Running" and status.progress ~= nil then
    hs.message = "Running: " .. status.progress .. " steps"
  elseif detail ~= "" then
    hs.message = phase .. ": " .. detail
  end
elseif phase == "Failed" or phase == "Cancelled" then
  hs.status = "Degraded"
  hs.message = phase
  if detail ~= "" then
    hs.message = phase .. ": " .. detail
  end
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
