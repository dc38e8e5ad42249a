-- @noindex
--[[ Dialog values: GetUserInputs wrapper and parsers for mode, strengths and seed. ]]
local M = require("aiedit.core")
---------------------------------------------------------------------------------------------
-- Dialog values
---------------------------------------------------------------------------------------------

function M.trim(s) return (tostring(s or ""):gsub("^%s+", ""):gsub("%s+$", "")) end

-- The protocol mode from what people type: lora | full | zeta | sdedit; "preview" is zeta (the fast
-- zero-shot edit). nil when unknown.
function M.parse_mode(s)
  s = M.trim(s):lower()
  if s == "lora" or s == "" then return "lora" end
  if s == "full" or s == "full fine-tune" or s == "finetune" then return "full" end
  if s == "zeta" or s == "preview" or s == "quick preview" or s == "quick" then return "zeta" end
  if s == "sdedit" then return "sdedit" end
  return nil
end

-- Zero-shot modes take noise strengths in (0, 1] instead of η.
M.ZERO_SHOT = { sdedit = true, zeta = true }

function M.parse_etas(s, mode)
  local etas = M.array()
  for part in tostring(s or ""):gmatch("[^,;%s]+") do
    local v = tonumber(part)
    if not v then return nil, "not a number: " .. part end
    if M.ZERO_SHOT[mode] then
      if v <= 0 or v > 1 then return nil, "quick preview strengths must be in (0, 1]: " .. part end
    elseif v < 0 or v > 1.5 then
      return nil, "η must be in [0, 1.5]: " .. part
    end
    etas[#etas + 1] = v + 0.0
  end
  if #etas == 0 then return nil, "give at least one η value" end
  if #etas > 16 then return nil, "at most 16 η values" end
  return etas
end

-- Empty or "random": a fresh seed (recorded with the takes so results stay reproducible).
function M.parse_seed(s)
  s = M.trim(s):lower()
  if s == "" or s == "random" then return math.random(0, 2147483646) end
  local v = math.tointeger(tonumber(s))
  if not v or v < 0 then return nil, "seed must be a whole number ≥ 0 (or empty for random)" end
  return v
end

-- GetUserInputs with "\n" as the value separator: prompts may contain commas. The separator applies to
-- the values only: REAPER always splits the captions on commas, so a caption must never hold one.
function M.user_inputs(title, captions, defaults, width)
  for _, c in ipairs(captions) do
    if c:find(",", 1, true) then error("dialog caption holds a comma: " .. c) end
  end
  for i, d in ipairs(defaults) do defaults[i] = tostring(d):gsub("[\r\n]+", " ") end
  local caps = table.concat(captions, ",") .. ",separator=\n,extrawidth=" .. (width or 250)
  local ok, csv = reaper.GetUserInputs(title, #captions, caps, table.concat(defaults, "\n"))
  if not ok then return nil end
  local vals = {}
  for v in (csv .. "\n"):gmatch("([^\n]*)\n") do vals[#vals + 1] = v end
  return vals
end

return M
