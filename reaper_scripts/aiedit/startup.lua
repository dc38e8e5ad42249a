-- @noindex
--[[ Opening the jobs window when REAPER starts, as an opt-in: REAPER runs <resource path>/Scripts/__startup.lua at
start (a community convention, not in the ReaScript docs; SWS's startup action is the other way). The scripts add or
remove one marked block there and leave everything else in the file as it is. ]]
local M = require("aiedit.core")

M.STARTUP_BEGIN = "-- >>> aiedit: open the AI edit jobs window when REAPER starts (AI edit settings turns it off)"
M.STARTUP_END = "-- <<< aiedit"

function M.startup_file() return M.join(reaper.GetResourcePath(), "Scripts", "__startup.lua") end

function M.startup_enabled()
  local text = M.read_file(M.startup_file()) or ""
  return text:find(M.STARTUP_BEGIN, 1, true) ~= nil
end

-- The file's text without our block (and without the blank line left where it was).
local function without_block(text)
  local b = text:find(M.STARTUP_BEGIN, 1, true)
  if not b then return text end
  local _, e = text:find(M.STARTUP_END, b, true)
  if not e then return text end
  local after = text:sub(e + 1):gsub("^\r?\n", "")
  return text:sub(1, b - 1) .. after
end

-- Turns the block on or off. `jobs_script`: the full path of "AI edit jobs.lua". Returns true, or nil and why.
function M.set_startup(on, jobs_script)
  local path = M.startup_file()
  local text = without_block(M.read_file(path) or "")
  if on then
    if text ~= "" and text:sub(-1) ~= "\n" then text = text .. "\n" end
    text = text .. M.STARTUP_BEGIN .. "\n" ..
      "do\n" ..
      "  local cmd = reaper.AddRemoveReaScript(true, 0, " .. string.format("%q", jobs_script) .. ", true)\n" ..
      "  if cmd and cmd ~= 0 then reaper.Main_OnCommand(cmd, 0) end\n" ..
      "end\n" .. M.STARTUP_END .. "\n"
  end
  local dir, name = path:match("^(.*)[/\\]([^/\\]+)$")
  local ok, err = M.write_atomic(dir, name, text)
  if not ok then return nil, err end
  return true
end

return M
