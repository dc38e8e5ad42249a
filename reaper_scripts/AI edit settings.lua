-- @description AI edit settings
-- @version 0.4.2
-- @author aiedit
-- @noindex
-- @about
--   Settings for the AI edit scripts: spool folder, engine command, whether the best-scoring
--   take becomes active, optional step-count override, token, where results go, and whether the
--   jobs window opens when REAPER starts.
--   Installed by the "AI edit selected items" package.

local dir = (select(2, reaper.get_action_context()):match("^(.*[/\\])") or "")
package.path = dir .. "?.lua;" .. dir .. "?/init.lua;" .. package.path
local lib = require("aiedit")

local TITLE = "AI edit settings"
local KEYS = { "spool", "engine_cmd", "activate_best", "steps", "token", "results" }

-- The token is a secret: the dialog shows that one is set, never the token itself; left as shown, it is kept.
local HIDDEN = "••••••••"

local function main()
  local defaults = {}
  for i, k in ipairs(KEYS) do defaults[i] = lib.get_setting(k) end
  local token = defaults[5]
  if token ~= "" then defaults[5] = HIDDEN end
  local fields = {
    { name = "Spool folder", hint = "empty = daemon default", check = function(s) return lib.trim(s) end },
    { name = "Engine command", hint = "full path + serve", check = function(s)
        s = lib.trim(s)
        if s == "" then return nil, "must not be empty" end
        return s
      end },
    { name = "Activate best take", hint = "yes/no", check = function(s) return lib.is_yes(s) and "yes" or "no" end },
    { name = "Steps override", hint = "JSON or empty", check = function(s)
        s = lib.trim(s)
        if s ~= "" and type(lib.json_decode(s)) ~= "table" then return nil, 'empty or JSON like {"sample":100}' end
        return s
      end },
    { name = "Token", hint = "empty unless --token; dots = keep", check = function(s)
        s = lib.trim(s)
        if s == HIDDEN then return token end
        return s
      end },
    { name = "Results as", hint = "takes / track / lanes", check = function(s)
        s = lib.trim(s):lower()
        if s == "" or s:find("^take") then return "takes" end
        if s:find("^track") then return "track" end
        if s:find("^lane") then return "lanes" end
        return nil, "takes / track / lanes"
      end },
    { name = "Open jobs window at start", hint = "yes/no", check = function(s)
        return lib.is_yes(s) and "yes" or "no"
      end },
  }
  local startup = lib.startup_enabled()
  defaults[#KEYS + 1] = startup and "yes" or "no"
  local v = lib.ask_fields(TITLE, fields, defaults, 360)
  if not v then return end
  for i, k in ipairs(KEYS) do lib.set_setting(k, v[i]) end
  local want = v[#KEYS + 1] == "yes"
  if want ~= startup then
    local ok, err = lib.set_startup(want, lib.script_dir() .. "AI edit jobs.lua")
    if not ok then
      reaper.ShowMessageBox("Could not change " .. lib.startup_file() .. ":\n\n" .. tostring(err), TITLE, 0)
    end
  end
end

main()
reaper.defer(function() end) -- no automatic undo point (settings are not project changes)
